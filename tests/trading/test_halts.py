"""trading.services.halts: halt, release and resume against a real kernel; a release with
nothing to release; a halt whose record is spooled when the database fails.

Tests marked ``integration`` run a real ``manage.py runkernel`` subprocess.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trading.admin_fixtures import write_kernel_status
from tests.trading.service_calls import CLI, audit_count, issue_committed, user_in_group
from trading import services
from trading.models import ControlCommand, Kernel
from tests.support.status_reader import read_control as control_json

pytestmark = pytest.mark.django_db


@pytest.mark.integration
def test_halt_release_resume_against_a_real_kernel(live_kernel, django_capture_on_commit_callbacks):
    risk = user_in_group("rita", "Risk")
    actor = services.Actor(name="rita", source="api", user=risk, ip="10.0.0.1")

    halt = services.halt_engage(kernel=live_kernel, actor=actor, reason="runaway orders")

    assert halt is not None and halt.status == "delivered"
    control = control_json(live_kernel.state_dir)
    assert control["halt"]["reason"] == "runaway orders" and control["halt"]["by"] == "rita"
    with pytest.raises(services.Conflict):
        # Until the kernel confirms, a release would cancel the halt before it was seen.
        services.command_issue(kernel=Kernel.objects.get(pk=live_kernel.pk), action="release", actor=actor)
    assert services.command_wait(command=halt, timeout_s=30).status == "applied"
    live_kernel.refresh_from_db()
    assert live_kernel.halt_engaged and live_kernel.state == "halted" and live_kernel.halt_requested_at is None
    with pytest.raises(services.Conflict):
        services.command_issue(kernel=live_kernel, action="resume", actor=actor)

    with django_capture_on_commit_callbacks(execute=True):
        release = services.halt_release(kernel=live_kernel, actor=actor)
    assert services.command_wait(command=release, timeout_s=30).status == "applied"
    live_kernel.refresh_from_db()
    assert live_kernel.state == "paused" and not live_kernel.halt_engaged
    resume = issue_committed(live_kernel, "resume", django_capture_on_commit_callbacks, actor=actor)
    assert services.command_wait(command=resume, timeout_s=30).status == "applied"

    for _ in range(3):
        services.status_sync(kernel=live_kernel)
    assert audit_count("halt.engaged", actor="rita", ip="10.0.0.1") == 1
    assert audit_count("halt.observed") == 1
    assert audit_count("halt.cleared") == 1
    assert audit_count("command.applied", command_id=release.command_id) == 1


def test_release_when_not_halted_is_a_conflict(idle_kernel):
    with pytest.raises(services.Conflict, match="not halted"):
        services.halt_release(kernel=idle_kernel, actor=CLI)
    assert not ControlCommand.objects.exists()


def test_halt_engage_spools_when_the_database_fails(spool, idle_kernel, database_refusing_writes):
    """The database refuses every write (a read-only connection stands in for a locked or lost
    database here; tests/integration/test_console_kernel.py locks a real file database)."""
    with database_refusing_writes():
        command = services.halt_engage(kernel=idle_kernel, actor=CLI, reason="db is down")

    assert command is None
    assert control_json(idle_kernel.state_dir)["halt"]["reason"] == "db is down"
    assert not audit_count("halt.engaged")
    line = json.loads(spool.read_text())
    assert line["action"] == "halt.engaged" and line["dedupe_key"].startswith("halt.engaged:halt-")

    assert services.audit_spool_flush() == 1
    assert services.audit_spool_flush() == 0
    assert audit_count("halt.engaged", kernel_name="idle", actor="tester@host") == 1
    assert ControlCommand.objects.get(action="halt").command_id == line["command_id"]


def test_halt_wait_reads_status_json_then_syncs_the_kernel_if_named(idle_kernel):
    state_dir = Path(idle_kernel.state_dir)
    write_kernel_status(state_dir)  # running: not halted within the wait
    assert services.halt_wait(state_dir=state_dir, timeout_s=0.2, kernel=idle_kernel) is None
    idle_kernel.refresh_from_db()
    assert idle_kernel.status_synced_at is None  # nothing to confirm, nothing synced

    write_kernel_status(state_dir, halt_reason="drill")
    st = services.halt_wait(state_dir=str(state_dir), timeout_s=5.0)
    assert st is not None and st.state == "halted" and st.halt.reason == "drill"
    idle_kernel.refresh_from_db()
    assert not idle_kernel.halt_engaged  # no kernel named: status.json alone

    st = services.halt_wait(state_dir=state_dir, timeout_s=5.0, kernel=idle_kernel)
    assert st is not None and st.halt.engaged
    idle_kernel.refresh_from_db()
    assert idle_kernel.halt_engaged and idle_kernel.halt_reason == "drill"
    assert audit_count("halt.observed", kernel_name="idle") == 1


def test_halt_wait_answers_from_status_json_when_the_database_fails(spool, idle_kernel, database_refusing_writes):
    write_kernel_status(Path(idle_kernel.state_dir), halt_reason="db is down")
    with database_refusing_writes():
        st = services.halt_wait(state_dir=idle_kernel.state_dir, timeout_s=5.0, kernel=idle_kernel)

    assert st is not None and st.halt.reason == "db is down"  # the sync's failure is not the halt's
    idle_kernel.refresh_from_db()
    assert not idle_kernel.halt_engaged and not audit_count("halt.observed")


def test_a_halt_whose_reason_holds_a_nul_is_written_and_recorded_with_it_spelled_out(idle_kernel):
    # PostgreSQL refuses a NUL in text: the halt must neither fail nor leave its record in the spool.
    halt = services.halt_engage(kernel=idle_kernel, actor=CLI, reason="bad\x00feed")
    assert halt is not None
    assert control_json(idle_kernel.state_dir)["halt"]["reason"] == "bad\\x00feed"
    assert ControlCommand.objects.get(pk=halt.pk).args["reason"] == "bad\\x00feed"
