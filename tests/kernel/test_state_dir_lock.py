"""kernel/state_dir_lock.py: one kernel per state dir, ``DIR/kernel.lock`` held for the kernel's life."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest

from kernel.errors import OperationalError
from kernel.kernel import Kernel, KernelOptions
from kernel.state_dir_lock import KERNEL_LOCK_FILE, KERNEL_PID_FILE, StateDirBusy, StateDirLock
from tests.kernel.kernel_driver import Driver

MP = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _hold(state_dir: str, held) -> None:
    lock = StateDirLock.acquire_for(Path(state_dir))
    held.set()
    while lock.held:  # until killed
        time.sleep(1)


@pytest.fixture
def holder(tmp_path: Path):
    """Another process holding the state dir's lock (it never lets go: it is killed)."""
    held = MP.Event()
    proc = MP.Process(target=_hold, args=(str(tmp_path), held), daemon=True)
    proc.start()
    assert held.wait(30), "the holder never took the lock"
    yield proc
    proc.kill()
    proc.join(10)


def test_the_lock_names_its_holder_and_refuses_a_second_taker_in_the_same_process(tmp_path: Path):
    first = StateDirLock.acquire_for(tmp_path)
    assert first.held
    pid_file = json.loads((tmp_path / KERNEL_PID_FILE).read_text())
    assert pid_file["pid"] == os.getpid() and pid_file["started_at"] and pid_file["host"]
    with pytest.raises(StateDirBusy) as err:
        StateDirLock.acquire_for(tmp_path)
    assert isinstance(err.value, OperationalError)  # runkernel turns it into exit 1 and its message
    assert err.value.holder_pid == os.getpid()
    assert f"pid {os.getpid()}" in str(err.value) and "\n" not in str(err.value)
    first.release()
    first.release()  # idempotent
    assert not (tmp_path / KERNEL_PID_FILE).exists()
    assert (tmp_path / KERNEL_LOCK_FILE).exists()  # the file stays: only the flock goes
    StateDirLock.acquire_for(tmp_path).release()


def test_another_process_holding_it_is_named_and_its_kill_9_frees_the_lock(tmp_path: Path, holder):
    with pytest.raises(StateDirBusy, match=f"in use by another kernel \\(pid {holder.pid},") as err:
        StateDirLock.acquire_for(tmp_path)
    assert err.value.holder_pid == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    assert holder.exitcode == -signal.SIGKILL
    lock = StateDirLock.acquire_for(tmp_path)  # the OS dropped the dead holder's flock at once
    assert json.loads((tmp_path / KERNEL_PID_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_stale_pid_file_is_not_named_as_the_holder(tmp_path: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / KERNEL_PID_FILE).write_text(json.dumps({"pid": dead.pid, "started_at": "x"}))
    raw = filelock.FileLock(tmp_path / KERNEL_LOCK_FILE, timeout=0)  # a holder that wrote no pid yet
    raw.acquire()
    try:
        with pytest.raises(StateDirBusy, match="pid unknown") as err:
            StateDirLock.acquire_for(tmp_path)
        assert err.value.holder_pid is None
    finally:
        raw.release()


def test_a_symlinked_pid_file_is_not_followed(tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text(json.dumps({"pid": 1, "host": "not-read"}))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / KERNEL_PID_FILE).symlink_to(secret)
    first = StateDirLock.acquire_for(tmp_path / "state")  # replaces the symlink, never writes the target
    assert json.loads(secret.read_text())["host"] == "not-read"
    assert not (tmp_path / "state" / KERNEL_PID_FILE).is_symlink()
    first.release()


# ------------------------------------------------------------------ in a kernel


def test_a_second_kernel_on_one_state_dir_fails_at_once_and_shutdown_lets_it_go(tmp_path: Path, strategies):
    d = Driver(tmp_path / "state", strategies)
    try:
        with pytest.raises(StateDirBusy, match=f"pid {os.getpid()} \\(this process\\)"):
            Kernel(KernelOptions(state_dir=tmp_path / "state", strategies_dir=strategies))
        assert d.kernel.state_lock.held
        d.kernel.tick_once()  # the refused kernel touched nothing of the first one
    finally:
        d.close()
    assert not d.kernel.state_lock.held
    d.kernel = d._build()  # a restart after shutdown takes the lock again
    d.close()


def test_a_kernel_that_fails_to_build_lets_the_state_dir_go(tmp_path: Path, strategies):
    opts = KernelOptions(state_dir=tmp_path / "state", strategies_dir=strategies, feed="replay")
    with pytest.raises(OperationalError, match="replay dir"):
        Kernel(opts)  # fails after its ledger was opened
    StateDirLock.acquire_for(tmp_path / "state").release()
