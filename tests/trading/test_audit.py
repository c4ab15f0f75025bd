"""trading.services.audit: the append-only audit log, and exactly-once by dedupe key."""
from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection, transaction

from tests.trading.service_calls import CLI, audit_count
from trading import services
from trading.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_audit_events_cannot_be_edited_or_deleted_through_the_orm():
    event = services.audit_record(action="test.event", actor=CLI, payload={"a": 1})

    event.action = "forged"
    with pytest.raises(PermissionDenied):
        event.save()
    with pytest.raises(PermissionDenied):
        event.delete()
    with pytest.raises(PermissionDenied):
        AuditEvent.objects.filter(pk=event.pk).update(action="forged")
    with pytest.raises(PermissionDenied):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(PermissionDenied), transaction.atomic():  # bulk_update marks its transaction broken
        AuditEvent.objects.bulk_update([event], ["action"])
    table = AuditEvent._meta.db_table
    for sql in (f"UPDATE {table} SET action = 'forged' WHERE id = %s", f"DELETE FROM {table} WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [event.pk])

    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.action, stored.payload) == ("test.event", {"a": 1})


def test_dedupe_key_records_once():
    assert services.audit_record(action="x", actor=None, dedupe_key="k1") is not None
    assert services.audit_record(action="x", actor=None, dedupe_key="k1") is None
    assert audit_count("x") == 1


def test_the_cli_actor_is_the_real_os_user_whatever_the_environment_says(monkeypatch, tmp_path):
    import os
    import pwd
    import socket

    from django.core.management import call_command

    monkeypatch.setenv("LOGNAME", "mallory")
    monkeypatch.setenv("USER", "mallory")
    real = f"{pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()}"
    assert services.Actor.cli().name == real

    state_dir = tmp_path / "kernel"
    state_dir.mkdir()
    call_command("kernelctl", "halt", "--state-dir", str(state_dir), "--reason", "drill")

    event = AuditEvent.objects.get(action="halt.engaged")
    assert (event.actor, event.source) == (real, "cli")
