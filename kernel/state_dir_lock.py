"""One kernel per state dir: ``DIR/kernel.lock``, held for the kernel's whole life.

Two kernels on one state dir would both trade its slots (double orders) and both write its
ledger and status.json. The kernel takes this lock first, before it opens anything of the state
dir, and lets it go last, after its ledger is closed. A second kernel does not wait: it fails at
once with :class:`StateDirBusy`, an :class:`~kernel.errors.OperationalError` (so ``runkernel``
exits 1), whose one-line message names the holder's pid.

The lock is an ``flock(2)`` (filelock, never its soft fallback): the OS drops it when the holding
process ends, however it ends, so a ``kill -9`` never leaves a lock that blocks the restart.
It is not the writers' lock (``control.lock``, kernel/control.py). Because a contender may open
(and, with some filelock versions, truncate) the lock file, the holder's identity goes in a
sibling file, ``DIR/kernel.pid`` (JSON: pid, start time, host), written once the lock is held and
removed before it is let go; after a crash it stays behind, stale and harmless.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import filelock

from .control import atomic_write_text
from .errors import OperationalError
from .protocol import utcnow_iso
from .safe_files import read_regular

__all__ = ["KERNEL_LOCK_FILE", "KERNEL_PID_FILE", "StateDirBusy", "StateDirLock"]

log = logging.getLogger("kernel")

KERNEL_LOCK_FILE = "kernel.lock"
KERNEL_PID_FILE = "kernel.pid"


class StateDirBusy(OperationalError):
    """Another kernel (``holder_pid``, None if it cannot be told) holds the state dir."""

    def __init__(self, message: str, holder_pid: int | None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


def _flock(path: Path) -> filelock.BaseFileLock:
    # timeout 0: never wait. thread_local False: shutdown may run on another thread than the
    # constructor. No soft fallback (a crash would leave its marker behind and block the restart).
    for kwargs in ({"thread_local": False, "fallback_to_soft": False, "preserve_lock_file": True},
                   {"thread_local": False}):
        try:
            return filelock.FileLock(path, timeout=0, **kwargs)
        except TypeError:  # an older filelock without these options: its Unix lock is flock anyway
            continue
    return filelock.FileLock(path, timeout=0)


def _holder(state_dir: Path) -> dict[str, Any]:
    """What ``kernel.pid`` says about the lock's holder ({} if it cannot be read)."""
    try:
        raw, _ = read_regular(state_dir / KERNEL_PID_FILE, limit=4096)
        value = json.loads(raw)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) and isinstance(value.get("pid"), int) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class StateDirLock:
    """``DIR/kernel.lock``: :meth:`acquire` it (or fail with :class:`StateDirBusy`), :meth:`release` it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / KERNEL_LOCK_FILE
        self.pid_path = self.state_dir / KERNEL_PID_FILE
        self._lock = _flock(self.path)

    @classmethod
    def acquire_for(cls, state_dir: Path) -> "StateDirLock":
        return cls(state_dir).acquire()

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> "StateDirLock":
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise self._busy() from None
        except OSError as exc:
            raise OperationalError(f"cannot lock the state dir {self.state_dir} ({self.path}): {exc}") from exc
        try:
            me = {"pid": os.getpid(), "started_at": utcnow_iso(), "host": socket.gethostname()}
            atomic_write_text(self.pid_path, json.dumps(me) + "\n")
        except BaseException:
            self._lock.release(force=True)
            raise
        return self

    def _busy(self) -> StateDirBusy:
        holder = _holder(self.state_dir)
        pid = holder.get("pid")
        if pid is not None and pid != os.getpid() and not _alive(pid):
            pid = None  # kernel.pid left by a crash, and the new holder has not written its own yet
        if pid is None:
            who = f"pid unknown: the holder has not written {self.pid_path.name} yet"
        else:
            who = f"pid {pid}" + (" (this process)" if pid == os.getpid() else "")
            if holder.get("started_at"):
                who += f", started {holder['started_at']}"
            if holder.get("host"):
                who += f" on {holder['host']}"
        return StateDirBusy(
            f"state dir {self.state_dir} is in use by another kernel ({who}), which holds "
            f"{self.path.name}: stop that kernel first, or use another --state-dir", pid)

    def release(self) -> None:
        """Let the state dir go (the kernel calls this last, after closing its ledger). Idempotent."""
        if not self._lock.is_locked:
            return
        try:
            if _holder(self.state_dir).get("pid") == os.getpid():
                self.pid_path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove %s: %s", self.pid_path, exc)
        finally:
            self._lock.release(force=True)
