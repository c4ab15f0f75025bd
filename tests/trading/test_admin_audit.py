"""The audit log in the admin: read-only even for a superuser, and its CSV export."""
from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse

from tests.trading.admin_fixtures import (  # noqa: F401 (fixtures)
    login, no_kernel_to_wait_for,
)
from trading import services
from trading.models import AuditEvent

pytestmark = pytest.mark.django_db


def record(action: str, actor: str = "alice", **kw) -> AuditEvent:
    return services.audit_record(action=action, actor=services.Actor(name=actor, source="admin"), **kw)


def test_audit_events_cannot_be_changed_or_deleted_even_by_a_superuser(admin_client):
    event = record("halt.engaged", kernel_name="k1", outcome="written", payload={"reason": "x"})
    change = reverse("admin:trading_auditevent_change", args=[event.pk])
    page = admin_client.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(change, {"actor": "mallory", "outcome": "ok"}).status_code == 403
    delete = reverse("admin:trading_auditevent_delete", args=[event.pk])
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert admin_client.get(reverse("admin:trading_auditevent_add")).status_code == 403
    listing = admin_client.get(reverse("admin:trading_auditevent_changelist"))
    assert "delete_selected" not in listing.content.decode()
    admin_client.post(reverse("admin:trading_auditevent_changelist"),
                      {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"})
    event.refresh_from_db()
    assert (event.actor, event.outcome) == ("alice", "written")


def read_csv(response) -> list[dict]:
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_export_csv_of_the_filtered_changelist(login):
    record("command.issued", kernel_name="k1", slot_id="btc-5m", command_id="c-1", outcome="issued",
           payload={"action": "slot.pause"})
    record("command.applied", actor="operator", kernel_name="k1", slot_id="btc-5m", command_id="c-1",
           outcome="applied")
    record("login.failed", actor="=HYPERLINK(\"http://evil\")", outcome="failed")
    client = login("Viewer")
    listing = client.get(reverse("admin:trading_auditevent_changelist") + "?kernel_name=k1")
    assert 'id="export-csv"' in listing.content.decode()
    # Every event as recorded (?events=all); the default, one row per action, is in test_audit_view.py.
    rows = read_csv(client.get(reverse("admin:trading_auditevent_export") + "?events=all&kernel_name=k1"))
    assert [(r["action"], r["command_id"], r["outcome"]) for r in rows] == [
        ("command.applied", "c-1", "applied"), ("command.issued", "c-1", "issued")]
    assert json.loads(rows[1]["payload"]) == {"action": "slot.pause"}
    assert set(rows[0]) >= {"at", "actor", "source", "ip", "action", "kernel_name", "slot_id", "command_id"}
    rows = read_csv(client.get(reverse("admin:trading_auditevent_export") + "?events=all&q=operator"))
    assert [r["action"] for r in rows] == ["command.applied"]
    # A cell a spreadsheet would run as a formula is defused.
    rows = read_csv(client.get(reverse("admin:trading_auditevent_export") + "?events=all&action=login.failed"))
    assert rows[0]["actor"] == "'=HYPERLINK(\"http://evil\")"


def test_export_csv_action_on_selected_events(admin_client):
    a = record("halt.engaged", kernel_name="k1")
    record("halt.observed", kernel_name="k1")
    response = admin_client.post(reverse("admin:trading_auditevent_changelist") + "?events=all",
                                 {"action": "export_csv", "_selected_action": [a.pk]})
    assert [r["action"] for r in read_csv(response)] == ["halt.engaged"]
