"""The tick's view of control.json: read at the top of every tick, when it may have changed.

A halt requested there is engaged before anything else runs; the commands are applied
in file order by :mod:`kernel.command_stream`; a file that cannot be parsed yields no
commands and its error is reported in status.json (but a ``halt`` in it still halts).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .changes import Changes
from .control import read_control
from .protocol import Command

__all__ = ["ControlWatch"]

log = logging.getLogger("kernel")

CONTROL_MTIME_GRANULARITY_NS = 2_000_000_000  # coarsest file timestamps we expect (FAT: 2 s)


class ControlWatch:
    def __init__(self, *, path: Path, changes: Changes) -> None:
        self.path = path
        self._changes = changes
        self.halt = False
        self.halt_reason: str | None = None
        self.halt_id: str | None = None  # the halt block's "id": the kernel's halt lines name it
        self.error: str | None = None
        self.commands: list[Command] = []
        self.written_ns: int | None = None  # the read file's mtime (wall ns): when a halt in it was asked for
        self._fp: tuple | None = None
        self._read_wall = 0.0
        self._racy = True  # see poll
        self._polled: tuple | None = None  # what the last poll's lstat saw (see changed)

    def changed(self) -> bool:
        """Whether control.json is not the file the last poll saw (one lstat, no read): the run
        loop asks between ticks, so that a halt written meanwhile starts a tick at once."""
        return self._lstat() != self._polled

    def _lstat(self) -> tuple | None:
        try:
            st = os.lstat(self.path)  # never through a symlink (kernel/safe_files.py)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def poll(self) -> None:
        fp = self._polled = self._lstat()
        now = time.monotonic()
        # An unchanged (inode, mtime, size) proves nothing for a file modified within the
        # filesystem's timestamp granularity of our last read (racy git's rule): re-read then.
        if fp == self._fp and now - self._read_wall < 1.0 and not self._racy:
            return
        self._read_wall = now
        read_wall_ns = time.time_ns()
        read = read_control(self.path)
        self._racy = (read.fingerprint is not None
                      and read.fingerprint[1] >= read_wall_ns - CONTROL_MTIME_GRANULARITY_NS)
        changed = read.error != self.error
        self._fp = read.fingerprint
        self.written_ns = read.fingerprint[1] if read.fingerprint is not None else None
        self.halt = read.halt
        self.halt_reason = read.halt_reason
        self.halt_id = read.halt_id
        self.error = read.error
        self.commands = read.commands if read.error is None else []
        if changed:
            self._changes.status_urgent = True
            if read.error:
                log.error("control.json rejected: %s", read.error)
