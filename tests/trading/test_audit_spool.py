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
