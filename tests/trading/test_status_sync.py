"""trading.services.kernels.status_sync and status_mirror: the mirror of status.json, and
every kernel outcome audited exactly once however often the sync runs.

Tests marked ``integration`` run a real ``manage.py runkernel`` subprocess.
"""
from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from kernel.control import append_commands
from kernel.protocol import Command
from tests.support.waiting import wait_until
from tests.trading.service_calls import audit_count, issue_committed
from trading import services
from trading.models import AuditEvent, EquitySample, Fill, Kernel, Slot

pytestmark = pytest.mark.django_db


@pytest.mark.integration
def test_outcomes_are_audited_exactly_once_however_often_status_sync_runs(
        live_kernel, django_capture_on_commit_callbacks):
    reload = issue_committed(live_kernel, "reload", django_capture_on_commit_callbacks, args={"strategy": "breakout"})
    pause = issue_committed(live_kernel, "slot.pause", django_capture_on_commit_callbacks, slot_id="eth-5m")
    # A command a human wrote by hand: unknown to the console, audited all the same.
    append_commands(Path(live_kernel.state_dir), [Command(id="by-hand-1", action="slot.pause", slot="sol-5m")])
    assert services.command_wait(command=reload, timeout_s=30).status == "applied"
    assert services.command_wait(command=pause, timeout_s=30).status == "applied"

    def audited() -> bool:
        if audit_count("command.applied", command_id="by-hand-1"):
            return True
        services.status_sync(kernel=live_kernel)
        return False

    wait_until(audited, timeout=30, what="the hand-written command's audit", poll=0.05)

    for _ in range(5):
        services.status_sync(kernel=live_kernel)
        time.sleep(0.2)

    for command_id in (reload.command_id, pause.command_id, "by-hand-1"):
        assert audit_count("command.applied", command_id=command_id) == 1, command_id
    assert audit_count("reload.unchanged", command_id=reload.command_id) == 1
    assert AuditEvent.objects.get(action="command.applied", command_id="by-hand-1").actor == "kernel:demo"
    reloaded = AuditEvent.objects.get(action="reload.unchanged")
    assert reloaded.payload["old_sha256"] == reloaded.payload["new_sha256"]
    assert len(reloaded.payload["new_sha256"]) == 64


@pytest.mark.integration
def test_status_sync_mirrors_slots_fills_and_equity(live_kernel):
    summary = services.status_sync(kernel=live_kernel)
    assert summary["status"] == "ok"
    assert Slot.objects.filter(kernel=live_kernel).count() == 16
    btc = Slot.objects.get(kernel=live_kernel, slot_id="btc-5m")
    assert btc.running_config["symbol"] == "BTC/USDT" and btc.config_drift() == {}
    assert btc.state == "active"
    assert EquitySample.objects.filter(kernel=live_kernel).count() == 1
    services.status_sync(kernel=live_kernel)
    assert EquitySample.objects.filter(kernel=live_kernel).count() == 1  # at most one per ~10 s
    live_kernel.refresh_from_db()
    reported = {f["fill_id"] for f in live_kernel.status["fills"]}
    assert set(Fill.objects.filter(kernel=live_kernel).values_list("fill_id", flat=True)) >= reported


def test_status_sync_if_stale_skips_a_fresh_mirror_and_syncs_an_old_one(db, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    from trading import services
    from trading.models import Kernel

    import os
    import time

    (tmp_path / "status.json").write_text("{}")
    past = time.time() - 10
    os.utime(tmp_path / "status.json", (past, past))
    kernel = Kernel.objects.create(name="fresh", state_dir=str(tmp_path), status_synced_at=timezone.now())
    assert services.status_sync_if_stale(kernel=kernel)["status"] == "fresh"
    # status.json rewritten after the last sync: sync, however recent the mirror.
    os.utime(tmp_path / "status.json", None)
    kernel.status_synced_at = timezone.now() - timedelta(seconds=0.5)
    assert services.status_sync_if_stale(kernel=kernel)["status"] == "unreadable"  # a real sync ran
    (tmp_path / "status.json").unlink()
    kernel.status_synced_at = timezone.now() - timedelta(seconds=5)
    assert services.status_sync_if_stale(kernel=kernel)["status"] == "missing"  # a real sync: no status.json


def test_a_canarys_automatic_rollback_is_audited_once_with_its_reason(db, tmp_path):
    """The kernel reports an automatic rollback as a reload result (kernel/canary.py); the console
    audits it as reload.auto_rolled_back with the canary's command and the reason, once."""
    from kernel.control import write_status
    from kernel.protocol import ReloadStatus
    from tests.trading.admin_fixtures import write_kernel_status

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    kernel = Kernel.objects.create(name="k1", state_dir=str(state_dir))
    status = write_kernel_status(state_dir)
    status.reloads = [ReloadStatus(at="2026-12-07T10:05:00.000Z", strategy="ema_cross", result="auto_rolled_back",
                                   error="canary budget spent: 2 faults in 3 cycles (budget 1)",
                                   old_sha256="b" * 64, new_sha256="a" * 64, command_id="c-canary")]
    write_status(state_dir / "status.json", status)
    for _ in range(3):
        services.status_sync(kernel=kernel)
    events = AuditEvent.objects.filter(action="reload.auto_rolled_back", kernel_name="k1")
    assert events.count() == 1
    event = events.get()
    assert event.command_id == "c-canary" and event.outcome == "auto_rolled_back"
    assert "budget" in event.payload["error"] and event.payload["strategy"] == "ema_cross"
