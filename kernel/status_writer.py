"""Writes status.json off the tick thread: the tick hands over a snapshot, latest wins.

Each write replaces status.json by rename (kernel/safe_files.py): a symlink, FIFO or device
someone put there is replaced itself, never followed or opened, and logged once. A new
status.json gets 0o666 minus the kernel's umask: the console's user must be able to read it.
"""
from __future__ import annotations

import logging
import math
import os
import stat
import threading
from pathlib import Path
from typing import Any

from .control import atomic_write_json
from .safe_files import file_kind

log = logging.getLogger("kernel.status")


class StatusWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._pending: dict[str, Any] | None = None
        self._closed = False
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self._thread.start()

    def publish(self, snapshot: dict[str, Any]) -> None:
        with self._cond:
            self._pending = snapshot
            self._cond.notify()

    def write_now(self, snapshot: dict[str, Any]) -> None:
        """Synchronous write (used for the last status at shutdown)."""
        with self._cond:
            self._pending = None
        self._write(snapshot)

    def _write(self, snapshot: dict[str, Any]) -> None:
        self._check_not_replacing_a_special_file()
        try:
            atomic_write_json(self.path, snapshot)
        except ValueError:
            # NaN/Infinity are not JSON: report them as null rather than stop reporting.
            atomic_write_json(self.path, _finite(snapshot))
        self.written += 1

    def _check_not_replacing_a_special_file(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except OSError:
            return
        if not stat.S_ISREG(mode):
            log.warning("%s is %s, not a regular file: replacing it (never following or opening it)",
                        self.path, file_kind(mode))

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None and self._closed:
                    return
                snapshot, self._pending = self._pending, None
            try:
                self._write(snapshot)
            except Exception:  # noqa: BLE001 - a full disk must not kill the kernel
                log.exception("could not write %s", self.path)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
