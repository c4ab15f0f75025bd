"""One kernel per state dir (kernel/state_dir_lock.py), as an operator sees it: a second runkernel on
a busy state dir exits at once, non-zero, naming the pid that holds it, and the first one trades on;
a kernel killed with SIGKILL leaves nothing that blocks its restart."""
from __future__ import annotations

import json

import pytest

from tests.support.kernel_process import WAIT_S, KernelProcess, kernel_env, runkernel_args
from tests.support.ledger_reader import sqlite_rows

pytestmark = pytest.mark.integration


def _second_kernel(state_dir, log_path, launcher: str) -> tuple[int, str]:
    """Start another kernel on ``state_dir``; its exit code and its output."""
    second = KernelProcess(state_dir, runkernel_args(speed=600, tick_ms=100, demo=True), launcher=launcher,
                           env=kernel_env(), log_path=log_path)
    try:
        second.start(wait=False)
        code = second.wait_exit(WAIT_S)  # generous: it must exit by itself, whenever it gets the CPU
    finally:
        second.cleanup()
    return code, log_path.read_text(errors="replace")


def test_a_second_kernel_exits_naming_the_holder_and_a_kill_9_never_blocks_the_restart(kernels, tmp_path):
    state = tmp_path / "state"
    first = kernels(state)
    slots_before = sqlite_rows(state / "ledger.sqlite3", "SELECT id FROM slots ORDER BY id")
    for launcher in ("runkernel", "direct"):
        before = first.status()
        code, out = _second_kernel(state, tmp_path / f"second-{launcher}.log", launcher)
        assert code == 1, (launcher, out)
        lines = [line for line in out.splitlines() if "in use by another kernel" in line]
        assert len(lines) == 1 and f"(pid {first.pid}," in lines[0], (launcher, out)
        assert "Traceback" not in out, out
        # The first kernel never noticed: same pid in status.json, and its heartbeat goes on.
        after = first.wait(lambda s: s["tick"] > before["tick"] and s["heartbeat_at"] > before["heartbeat_at"],
                           what="the first kernel's heartbeat to advance")
        assert after["pid"] == first.pid and after["state"] == "running"
        assert first.alive()
    assert json.loads((state / "kernel.pid").read_text())["pid"] == first.pid
    assert sqlite_rows(state / "ledger.sqlite3", "SELECT id FROM slots ORDER BY id") == slots_before

    first.kill9()  # a crash: no shutdown, kernel.lock and a stale kernel.pid stay behind
    assert (state / "kernel.lock").exists()
    assert json.loads((state / "kernel.pid").read_text())["pid"] == first.pid
    restarted = kernels(state)  # waits for this pid's first tick
    assert restarted.pid != first.pid
    st = restarted.wait_ticks(3)
    assert st["pid"] == restarted.pid and st["state"] == "running"
    assert json.loads((state / "kernel.pid").read_text())["pid"] == restarted.pid
    assert restarted.terminate() == 0
    assert not (state / "kernel.pid").exists()  # a clean stop takes its name off the state dir
