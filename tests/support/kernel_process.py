"""The one launcher of a real kernel process, for the integration tests and the benchmarks.

:class:`KernelProcess` runs ``manage.py runkernel`` (or ``python -m kernel``, the same command
without Django's setup) on a state dir, in a session of its own with its output in a log file,
and drives it only from outside, as the console and kernelctl do: it waits on status.json
conditions (never on the clock alone), sends commands through control.json, reads results
from status.json or the ledger, and ends the process by SIGTERM, SIGKILL or a kill of its
whole group. Tests run the kernel under the kernel-only Django settings of
tests/integration/kernel_settings.py (no database, no console app) unless
FORESIGHT_KERNEL_TEST_SETTINGS names others.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from kernel import control_client as ctl
from kernel.control import append_commands
from kernel.protocol import Command
from tests.support.checkout import PYTHON, REPO
from tests.support.ledger_reader import LEDGER_FILE, ledger_command, sqlite_rows
from tests.support.processes import clean_env, kill_group, log_tail, spawn
from tests.support.status_reader import STATUS_FILE, SlotNotInStatus, command_result, read_status, slot_status
from tests.support.waiting import wait_until

KERNEL_TEST_SETTINGS = os.environ.get("FORESIGHT_KERNEL_TEST_SETTINGS", "tests.integration.kernel_settings")
WAIT_S = 60.0  # generous: conditions, not durations, are what the tests check
# runkernel: the management command under Django; direct: the same command's handle without
# django.setup() (kernel/__main__.py), so a console module that does not import cannot stop it.
LAUNCHERS: dict[str, list[str]] = {
    "runkernel": [PYTHON, str(REPO / "manage.py"), "runkernel"],
    "direct": [PYTHON, "-m", "kernel"],
}


def kernel_env(*, settings: str = KERNEL_TEST_SETTINGS, **extra: str) -> dict[str, str]:
    """The environment of a test's kernel: no FORESIGHT_* knob of the developer's shell."""
    return clean_env(DJANGO_SETTINGS_MODULE=settings, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
                     **extra)


def runkernel_args(*, speed: float | None = None, tick_ms: int | None = None, demo: bool = False,
                   strategies_dir: Path | None = None, cash: float | None = None, workers: int | None = None,
                   extra: Iterable[str] = ()) -> list[str]:
    """runkernel's options (after ``--state-dir``, which :class:`KernelProcess` adds)."""
    args: list[str] = []
    if speed is not None:
        args += ["--speed", str(speed)]
    if tick_ms is not None:
        args += ["--tick-ms", str(tick_ms)]
    args += list(extra)
    if demo:
        args.append("--demo")
    if strategies_dir is not None:
        args += ["--strategies-dir", str(strategies_dir)]
    if cash is not None:
        args += ["--cash", str(cash)]
    if workers is not None:
        args += ["--workers", str(workers)]
    return args


def first_tick(status: dict) -> bool:
    """Past its boot: the kernel has ticked (whatever state its first tick left it in)."""
    return status.get("state") != "starting" and status.get("tick", 0) >= 1


class KernelDied(AssertionError):
    """The kernel process ended while something was waiting on it."""


class KernelProcess:
    """One kernel process on one state dir; ``args`` are runkernel's options (:func:`runkernel_args`)."""

    def __init__(self, state_dir: Path, args: Sequence[str] = (), *, launcher: str = "runkernel",
                 env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        if launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {launcher!r} (one of {', '.join(LAUNCHERS)})")
        self.state_dir = Path(state_dir)
        self.args = list(args)
        self.launcher = launcher
        self.env = env if env is not None else kernel_env()
        self.log_path = log_path or self.state_dir / "kernel.log"
        self.proc: subprocess.Popen | None = None
        self.first_status: dict | None = None
        self._n = 0

    # ------------------------------------------------------------ process

    def start(self, *, wait: bool = True, timeout: float = WAIT_S,
              ready: Callable[[dict], Any] = first_tick) -> "KernelProcess":
        """Start the kernel; with ``wait``, until this pid's status.json satisfies ``ready``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*LAUNCHERS[self.launcher], "--state-dir", str(self.state_dir), *self.args]
        self.proc = spawn(cmd, env=self.env, log_path=self.log_path)
        if wait:
            try:
                self.first_status = self.wait(lambda s: s.get("pid") == self.pid and ready(s), timeout,
                                              what="the kernel's first status")
            except BaseException:
                self.cleanup()
                raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the kernel was never started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self, what: str = "its work") -> None:
        if not self.alive():
            raise KernelDied(f"kernel exited ({self.returncode}) waiting for {what}; the end of "
                             f"{self.log_path}:\n{self.log_tail()}")

    def terminate(self, timeout: float = WAIT_S) -> int:
        """SIGTERM, the graceful stop, and its exit code (TimeoutExpired if it does not stop)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self, timeout: float = WAIT_S) -> int | None:
        """SIGTERM if still running; SIGKILL if it is ignored for ``timeout``. The exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"kernel pid {self.pid} ignored SIGTERM for {timeout:g} s: killing it", file=sys.stderr)
                kill_group(self.proc)
        return self.proc.returncode

    def kill9(self) -> int:
        """SIGKILL to the kernel alone: a crash, no shutdown."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(WAIT_S)

    def wait_exit(self, timeout: float) -> int:
        """The exit code of a kernel that stops by itself (a replay at its last candle)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            raise AssertionError(f"kernel pid {self.pid} still running after {timeout}s: killed") from None

    def cleanup(self) -> None:
        """Whatever the test did: nothing of this kernel keeps running."""
        if self.proc is not None:
            kill_group(self.proc)

    def log_tail(self, n: int = 60) -> str:
        return log_tail(self.log_path, n)

    # ------------------------------------------------------------ status

    def status(self) -> dict | None:
        """status.json as it is now. The kernel replaces it atomically, so a torn read is a
        kernel bug: it fails the test rather than being retried."""
        return read_status(self.state_dir)

    def wait(self, pred: Callable[[dict], Any], timeout: float = WAIT_S, what: str = "a condition",
             poll: float = 0.02) -> dict:
        """The first status.json for which ``pred`` is true; fails if the kernel dies first. A slot
        that status.json does not list yet (:meth:`slot`) is "not yet", any other error a bug."""
        last: list[dict] = []

        def holds() -> dict | None:
            st = self.status()
            if st is None:
                return None
            last[:] = [st]
            return st if pred(st) else None

        def brief() -> str:
            keys = ("state", "tick", "control_error", "pending_commands")
            summary = {k: last[0].get(k) for k in keys} if last else None
            return f"status {summary}\n{self.log_tail(30)}"

        return wait_until(holds, timeout=timeout, what=what, poll=poll, transient=(SlotNotInStatus,),
                          abort=lambda: self.check_alive(what), last_seen=brief)

    def next_status(self, timeout: float = 30.0) -> dict:
        """The next status.json the kernel writes (a new file: inode or mtime changed)."""
        path = self.state_dir / STATUS_FILE
        first = os.stat(path)

        def fresh() -> dict | None:
            st = os.stat(path)
            return self.status() if (st.st_ino, st.st_mtime_ns) != (first.st_ino, first.st_mtime_ns) else None

        return wait_until(fresh, timeout=timeout, what="a new status.json (is it being written?)", poll=0.001)

    def wait_ticks(self, n: int, timeout: float = WAIT_S) -> dict:
        start = self.status()["tick"]
        return self.wait(lambda s: s["tick"] >= start + n, timeout, f"{n} more ticks")

    @staticmethod
    def slot(status: dict, slot_id: str) -> dict:
        return slot_status(status, slot_id)

    # ------------------------------------------------------------ commands

    def new_id(self, prefix: str = "t") -> str:
        self._n += 1
        return f"{prefix}-{os.getpid()}-{self._n}-{time.monotonic_ns()}"

    def send(self, action: str, slot: str | None = None, args: dict | None = None,
             command_id: str | None = None) -> str:
        """A command written into control.json exactly as kernelctl writes it; its id."""
        cmd = ctl.build_command(action, slot, args or {}, command_id=command_id or self.new_id(),
                                issued_by="integration-test")
        ctl.send(self.state_dir, cmd)
        return cmd.id

    def result(self, command_id: str, timeout: float = WAIT_S) -> dict:
        """The kernel's result for a command, from status.json (recent results) or, for an
        older one, from the ledger's commands table."""
        what = f"the result of {command_id}"
        return wait_until(
            lambda: command_result(self.status(), command_id) or ledger_command(self.state_dir, command_id),
            timeout=timeout, what=what, poll=0.02, abort=lambda: self.check_alive(what),
            last_seen=lambda: f"nothing\n{self.log_tail(30)}")

    def call(self, action: str, slot: str | None = None, args: dict | None = None,
             timeout: float = WAIT_S) -> dict:
        return self.result(self.send(action, slot, args), timeout)

    def ok(self, action: str, slot: str | None = None, args: dict | None = None,
           timeout: float = WAIT_S) -> dict:
        r = self.call(action, slot, args, timeout)
        assert r["result"] == "applied", r
        return r

    def append(self, commands: list[Command], **kw: Any) -> None:
        append_commands(self.state_dir, commands, **kw)

    # ------------------------------------------------------------ databases

    def query(self, sql: str, args: tuple = (), db: str = LEDGER_FILE) -> list[dict]:
        return sqlite_rows(self.state_dir / db, sql, args)
