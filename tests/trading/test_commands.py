"""trading.services.commands: issuing a command (permission and shape checked before
anything is written) and its life against a real kernel: pending → delivered → applied or
rejected, each step audited.

Tests marked ``integration`` run a real ``manage.py runkernel`` subprocess on a temp
state dir (the demo deployment at 600× speed) and steer it only through the services.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from django.utils import timezone

from kernel.control import read_control
from kernel.protocol import CommandStatus
from tests.trading.admin_fixtures import iso, write_kernel_status
from tests.trading.service_calls import CLI, audit_count, issue_committed, user_in_group
from trading import services
from trading.models import AuditEvent, ControlCommand, Kernel, Slot
from tests.support.status_reader import read_control as control_json

pytestmark = pytest.mark.django_db


@pytest.mark.integration
def test_command_life_pending_delivered_applied(live_kernel, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        command = services.command_issue(kernel=live_kernel, action="pause", actor=CLI)
        assert ControlCommand.objects.get(pk=command.pk).status == "pending"  # nothing sent before commit
    assert len(callbacks) == 1
    assert ControlCommand.objects.get(pk=command.pk).status == "delivered"
    control = control_json(live_kernel.state_dir)
    assert command.command_id in [c["id"] for c in control["commands"]]

    command = services.command_wait(command=command, timeout_s=30)

    assert command.status == "applied", command.error
    assert command.resolved_at is not None
    live_kernel.refresh_from_db()
    assert live_kernel.state == "paused"
    assert audit_count("command.issued", command_id=command.command_id, actor="tester@host", source="cli") == 1
    applied = AuditEvent.objects.get(action="command.applied", command_id=command.command_id)
    assert (applied.actor, applied.source, applied.kernel_name) == ("tester@host", "kernel", "demo")


@pytest.mark.integration
def test_a_rejection_shows_the_kernels_reason(live_kernel, django_capture_on_commit_callbacks):
    command = issue_committed(live_kernel, "rollback", django_capture_on_commit_callbacks,
                              args={"strategy": "ema_cross"})

    command = services.command_wait(command=command, timeout_s=30)

    assert command.status == "rejected"
    assert command.error == "no previous version of ema_cross to roll back to"
    event = AuditEvent.objects.get(action="command.rejected", command_id=command.command_id)
    assert event.payload["error"] == command.error


def test_permissions_are_checked_before_anything_is_written(idle_kernel):
    viewer = services.Actor(name="vic", source="api", user=user_in_group("vic", "Viewer"))
    operator = services.Actor(name="olga", source="api", user=user_in_group("olga", "Operator"))
    anonymous = services.Actor(name="anonymous", source="api")
    for actor, action, kw in [
        (viewer, "pause", {}),
        (operator, "rollback", {"args": {"strategy": "ema_cross"}}),
        (operator, "slot.add", {"slot_id": "x-1m", "args": {}}),
        (anonymous, "pause", {}),
    ]:
        with pytest.raises(services.NotAllowed):
            services.command_issue(kernel=idle_kernel, action=action, actor=actor, **kw)
    with pytest.raises(services.NotAllowed):
        services.halt_engage(kernel=idle_kernel, actor=viewer, reason="x")
    assert not Path(idle_kernel.state_dir, "control.json").exists()
    assert not ControlCommand.objects.exists()


def test_unknown_slot_and_bad_commands(idle_kernel):
    with pytest.raises(services.NotFound):
        services.command_issue(kernel=idle_kernel, action="slot.pause", actor=CLI, slot_id="nope")
    with pytest.raises(services.ServiceError, match="needs a strategy"):
        services.command_issue(kernel=idle_kernel, action="rollback", actor=CLI)
    with pytest.raises(services.ServiceError, match="unknown action"):
        services.command_issue(kernel=idle_kernel, action="explode", actor=CLI)
    with pytest.raises(services.ServiceError, match="takes no slot"):
        services.command_issue(kernel=idle_kernel, action="pause", actor=CLI, slot_id="btc-5m")


# --------------------------------------------------------------------- many at once, by state dir, refreshed


def test_commands_issue_many_issues_one_per_slot_and_returns_the_refused(idle_kernel,
                                                                        django_capture_on_commit_callbacks):
    btc = Slot.objects.get(kernel=idle_kernel, slot_id="btc-5m")
    eth = Slot.objects.create(kernel=idle_kernel, slot_id="eth-5m", symbol="ETH/USDT", timeframe="5m",
                              strategy="ema_cross", params={"fast": 12, "slow": 26})
    ghost = Slot(kernel=idle_kernel, slot_id="ghost-1m")  # the console has no such slot

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        done = services.commands_issue_many(slots=[btc, ghost, eth], action="slot.pause", actor=CLI, timeout_s=0.0)
        # Waited for, and read back: nothing is sent before the commit, so nothing is delivered yet.
        assert [(slot, c.action, c.slot_id, c.status) for slot, c in done.issued] == [
            (btc, "slot.pause", "btc-5m", "pending"), (eth, "slot.pause", "eth-5m", "pending")]

    [(refused_slot, error)] = done.refused
    assert refused_slot is ghost and isinstance(error, services.NotFound) and "'ghost-1m'" in str(error)
    assert len(callbacks) == 2  # each command committed on its own
    assert ControlCommand.objects.filter(action="slot.pause").count() == 2
    assert audit_count("command.issued", actor="tester@host", source="cli") == 2
    sent = read_control(Path(idle_kernel.state_dir) / "control.json").commands
    assert [(c.id, c.action, c.slot) for c in sent] == [(c.command_id, "slot.pause", c.slot_id) for _, c in done.issued]


def test_commands_issue_many_refuses_every_slot_an_actor_may_not_command(idle_kernel):
    viewer = services.Actor(name="vic", source="admin", user=user_in_group("vic", "Viewer"))

    done = services.commands_issue_many(slots=list(Slot.objects.filter(kernel=idle_kernel)), action="slot.flatten",
                                        actor=viewer, timeout_s=0.0)

    assert done.issued == []
    assert [(slot.slot_id, type(error)) for slot, error in done.refused] == [("btc-5m", services.NotAllowed)]
    assert not ControlCommand.objects.exists() and audit_count("command.issued") == 0


def test_command_issue_for_state_dir_checks_against_the_kernels_latest_word(idle_kernel, tmp_path,
                                                                           django_capture_on_commit_callbacks):
    # The database still says running; the kernel's status.json says halted: synced first, refused.
    write_kernel_status(Path(idle_kernel.state_dir), halt_reason="drill")
    with pytest.raises(services.Conflict, match="is halted"):
        services.command_issue_for_state_dir(state_dir=idle_kernel.state_dir, action="resume", actor=CLI)
    idle_kernel.refresh_from_db()
    assert idle_kernel.halt_engaged and not ControlCommand.objects.exists()

    # A state dir the console does not know yet: registered (named after its folder), then issued to.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with django_capture_on_commit_callbacks(execute=True):
        command = services.command_issue_for_state_dir(state_dir=fresh, action="pause", actor=CLI)
    kernel = Kernel.objects.get(name="fresh")
    assert (command.kernel, command.action, command.source, command.status) == (kernel, "pause", "cli", "delivered")
    assert [c.id for c in read_control(fresh / "control.json").commands] == [command.command_id]
    again = services.command_issue_for_state_dir(state_dir=str(fresh), action="start", actor=CLI)
    assert again.kernel == kernel and Kernel.objects.filter(name__startswith="fresh").count() == 1


def test_command_refresh_syncs_only_until_the_command_is_final(idle_kernel, django_capture_on_commit_callbacks):
    command = issue_committed(idle_kernel, "pause", django_capture_on_commit_callbacks)
    assert command.status == "delivered"
    write_kernel_status(Path(idle_kernel.state_dir), state="paused", commands=[
        CommandStatus(id=command.command_id, action="pause", result="applied", at=iso(timezone.now()))])

    command = services.command_refresh(command=command)

    assert command.status == "applied"
    assert audit_count("command.applied", command_id=command.command_id) == 1
    synced_at = Kernel.objects.get(pk=idle_kernel.pk).status_synced_at
    assert synced_at is not None
    # Final: reading it again writes nothing, whatever status.json says now.
    write_kernel_status(Path(idle_kernel.state_dir), state="running", tick=99)
    assert services.command_refresh(command=command).status == "applied"
    assert Kernel.objects.get(pk=idle_kernel.pk).status_synced_at == synced_at
