"""Writes status.json off the tick thread: the tick hands over a snapshot, latest wins.

A snapshot may come with an ``after``: what the status needs done once it is written that
may wait on a database (kernel/status_snapshot.py). It runs on a thread of its own, latest wins
too, so that a write (a halt's status) never queues behind a database either.
status.json is not fsynced (the last one at shutdown is): it is rewritten every interval, a
reader needs it whole (the rename), not durable, and an fsync behind the order path's commits
would delay a halt's status. It is compact JSON (the C encoder: pretty-printing a thousand
slots costs six times as much), and a snapshot that reuses the previous one's ``slots`` list
(a halt's first status, kernel/status_snapshot.py) reuses its encoding too.

Each write replaces status.json by rename (kernel/safe_files.py): a symlink, FIFO or device
someone put there is replaced itself, never followed or opened, and logged once. A new
status.json gets 0o666 minus the kernel's umask: the console's user must be able to read it.
"""
from __future__ import annotations

import json
import logging
import math
import secrets
import os
import stat
import threading
from pathlib import Path
from typing import Any, Callable

from .safe_files import atomic_write_bytes, file_kind

log = logging.getLogger("kernel.status")

# A string no status holds (a fresh token per process), put where the slots go and replaced
# by their encoding in the encoded document.
_SLOTS = f"\x00slots-{secrets.token_hex(8)}\x00"
_SLOTS_JSON = json.dumps(_SLOTS, ensure_ascii=False)


class StatusWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._pending: tuple[dict[str, Any], Callable[[], None] | None] | None = None  # snapshot, after
        self._closed = False
        self._after: Callable[[], None] | None = None
        self._slots_cache: tuple[Any, str] | None = None  # (the slots list written last, its JSON)
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self._thread.start()
        self._after_thread = threading.Thread(target=self._run_after, name="status-after", daemon=True)
        self._after_thread.start()

    def publish(self, snapshot: dict[str, Any], *, after: Callable[[], None] | None = None) -> None:
        with self._cond:
            self._pending = (snapshot, after)
            self._cond.notify_all()

    def write_now(self, snapshot: dict[str, Any]) -> None:
        """Synchronous write (used for the last status at shutdown)."""
        with self._cond:
            self._pending = None
        self._write(snapshot, fsync=True)

    def _write(self, snapshot: dict[str, Any], *, fsync: bool = False) -> None:
        self._check_not_replacing_a_special_file()
        try:
            data = self._encode(snapshot)
        except ValueError:
            # NaN/Infinity are not JSON: report them as null rather than stop reporting.
            self._slots_cache = None
            data = self._encode(_finite(snapshot))
        atomic_write_bytes(self.path, data, fsync=fsync)
        self.written += 1

    def _encode(self, snapshot: dict[str, Any]) -> bytes:
        slots = snapshot.get("slots")
        cache = self._slots_cache
        if cache is not None and cache[0] is slots:
            slots_json = cache[1]
        else:
            slots_json = _dumps(slots)
            self._slots_cache = (slots, slots_json)
        doc = _dumps({**snapshot, "slots": _SLOTS}) if "slots" in snapshot else _dumps(snapshot)
        return (doc.replace(_SLOTS_JSON, slots_json, 1) + "\n").encode("utf-8")

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
                (snapshot, after), self._pending = self._pending, None
            try:
                self._write(snapshot)
            except Exception:  # noqa: BLE001 - a full disk must not kill the kernel
                log.exception("could not write %s", self.path)
            if after is not None:
                with self._cond:
                    self._after = after
                    self._cond.notify_all()

    def _run_after(self) -> None:
        while True:
            with self._cond:
                while self._after is None and not (self._closed and not self._thread.is_alive()):
                    self._cond.wait(0.1)
                if self._after is None:
                    return
                after, self._after = self._after, None
            try:
                after()
            except Exception:  # noqa: BLE001 - a closed ledger at shutdown, a broker error: reported
                log.exception("status.json: after the write")

    def close(self) -> None:
        """The pending write and its ``after`` are done before this returns (up to 5 s each)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(5)
        self._after_thread.join(5)


def _dumps(value: Any) -> str:
    # allow_nan=False: NaN/Infinity are not JSON, and our own reader refuses them.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
