"""The audit log's append-only triggers on PostgreSQL (trading/migrations/0002_audit_append_only).

tests/trading/test_audit.py checks UPDATE and DELETE on whichever database the run uses; these
check what only PostgreSQL has: the triggers in its catalog, a TRUNCATE refused, and the triggers
back in place after a test with real transactions emptied the database (tests/integration/console_db.py).
"""
from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from trading import services
from trading.models import AuditEvent

pytestmark = pytest.mark.postgres

TRIGGERS = {"trading_auditevent_no_change", "trading_auditevent_no_truncate"}


def _triggers() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'trading_auditevent'::regclass "
                       "AND NOT tgisinternal AND tgenabled <> 'D'")
        return {name for (name,) in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("audit_log_flushable")
def test_a_committed_event_is_emptied_by_the_flush_fixture_only():
    services.audit_record(action="test.committed", actor=services.Actor.system())
    assert AuditEvent.objects.filter(action="test.committed").count() == 1
    assert TRIGGERS <= _triggers()


@pytest.mark.django_db
def test_the_triggers_refuse_update_delete_and_truncate_and_survive_the_flush():
    # Runs after the test above: its flush (a TRUNCATE) went through and the triggers came back.
    assert not AuditEvent.objects.filter(action="test.committed").exists()
    assert TRIGGERS <= _triggers()
    event = services.audit_record(action="test.event", actor=services.Actor.system())
    for sql in ("UPDATE trading_auditevent SET action = 'forged' WHERE id = %s",
                "DELETE FROM trading_auditevent WHERE id = %s",
                "TRUNCATE trading_auditevent"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [event.pk] if "%s" in sql else None)
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"


@pytest.mark.django_db
def test_audit_times_with_offsets_postgresql_does_not_take_are_compared_in_utc(admin_client):
    # Python takes a UTC offset up to ±24 h, PostgreSQL only up to ±15:59 (schemathesis found it).
    event = services.audit_record(action="test.event", actor=services.Actor.system())
    response = admin_client.get("/api/audit", {"since": "2000-01-01T00:00:00-19:49"})
    assert response.status_code == 200, response.content
    assert event.pk in [item["id"] for item in response.json()["items"]]
    response = admin_client.get("/api/audit", {"until": "9999-12-31T23:00:00-05:00"})  # past year 9999 in UTC
    assert response.status_code == 422, response.content
