"""trading.services.audit_spool: events spooled while the database is down are written
once, with the command rows they describe."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.trading.service_calls import CLI, audit_count
from trading import services
from trading.models import AuditEvent, ControlCommand
from tests.support.status_reader import read_control as control_json

pytestmark = pytest.mark.django_db


def test_spooled_events_are_written_once(spool, idle_kernel):
    services.audit_spool(action="halt.engaged", actor=CLI, kernel_name="idle", command_id="h1",
                         dedupe_key="halt.engaged:h1")
    services.audit_spool(action="halt.engaged", actor=CLI, kernel_name="idle", command_id="h1",
                         dedupe_key="halt.engaged:h1")  # the same event twice (a retried append)
    services.audit_spool(action="login.failed", actor=services.Actor(name="eve", source="admin", ip="10.9.9.9"))
    assert len(spool.read_text().splitlines()) == 3

    assert services.audit_spool_flush() == 2
    assert services.audit_spool_flush() == 0

    assert audit_count("halt.engaged", command_id="h1") == 1
    event = AuditEvent.objects.get(action="login.failed")
    assert (event.actor, event.ip, event.payload["spooled"]) == ("eve", "10.9.9.9", True)
    assert not spool.exists() or spool.read_text() == ""


def test_a_spooled_cli_command_creates_its_row(spool, idle_kernel):
    wire = services.command_issue_offline(state_dir=idle_kernel.state_dir, kernel_name="whatever",
                                          action="pause", actor=CLI)
    assert control_json(idle_kernel.state_dir)["commands"][0]["id"] == wire.id

    services.audit_spool_flush()

    command = ControlCommand.objects.get(command_id=wire.id)
    assert (command.kernel, command.status, command.actor) == (idle_kernel, "delivered", "tester@host")
    assert AuditEvent.objects.get(action="command.issued", command_id=wire.id).kernel_name == "idle"


def test_a_line_appended_by_hand_is_refused_kept_aside_and_audited(spool, idle_kernel):
    import json

    services.audit_spool(action="halt.engaged", actor=CLI, kernel_name="idle", command_id="h2",
                         dedupe_key="halt.engaged:h2")
    genuine = json.loads(spool.read_text())
    assert len(genuine["mac"]) == 64
    forged = {**genuine, "actor": "alice", "ip": "10.0.0.7", "at": "2020-01-01T00:00:00+00:00",
              "dedupe_key": "halt.engaged:forged"}  # a genuine line, edited
    handmade = {k: v for k, v in forged.items() if k != "mac"}  # one with no signature at all
    with open(spool, "a", encoding="utf-8") as f:
        for event in (forged, handmade):
            f.write(json.dumps(event) + "\n")
        f.write("not json\n")

    assert services.audit_spool_flush() == 1

    assert [(e.actor, e.command_id) for e in AuditEvent.objects.filter(action="halt.engaged")] == [
        ("tester@host", "h2")]
    refused = AuditEvent.objects.filter(action="audit.spool_refused").order_by("id")
    assert refused.count() == 3 and {e.outcome for e in refused} == {"refused"}
    assert '"actor": "alice"' in refused[0].payload["line"]
    rejected = Path(f"{spool}.rejected").read_text().splitlines()
    assert len(rejected) == 3 and rejected[2] == "not json"
    assert services.audit_spool_flush() == 0 and refused.count() == 3


def test_a_spool_signed_under_another_key_is_refused(spool, idle_kernel, settings):
    services.audit_spool(action="login.failed", actor=CLI)
    settings.SECRET_KEY = "another installation's key, which signed the line above " * 2

    assert services.audit_spool_flush() == 0

    assert not audit_count("login.failed") and audit_count("audit.spool_refused") == 1
