"""Reading a state dir's status.json and control.json as plain JSON, from outside the kernel.

Both files are replaced atomically by their writers, so a read sees a whole file or none:
a file that does not parse is a bug and raises, it is never retried as "not yet".
Plain ``json`` rather than the protocol's pydantic models: with 1,000 slots a validated read
costs tens of ms of the CPU a benchmark is measuring the kernel on.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until

STATUS_FILE = "status.json"
CONTROL_FILE = "control.json"


class SlotNotInStatus(LookupError):
    """status.json does not list the slot (yet): a slot just added shows at the next write."""


def read_json(path: Path) -> dict | None:
    """The whole file, or None if there is none yet."""
    try:
        return json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return None


def read_status(state_dir: Path) -> dict | None:
    return read_json(Path(state_dir) / STATUS_FILE)


def read_control(state_dir: Path) -> dict | None:
    return read_json(Path(state_dir) / CONTROL_FILE)


def slot_status(status: dict, slot_id: str) -> dict:
    for slot in status["slots"]:
        if slot["id"] == slot_id:
            return slot
    raise SlotNotInStatus(slot_id)


def command_result(status: dict | None, command_id: str) -> dict | None:
    """The kernel's result for ``command_id`` among status.json's recent ones (the newest)."""
    for entry in reversed((status or {}).get("commands") or []):
        if entry.get("id") == command_id:
            return entry
    return None


def done_ids(status: dict | None) -> set[str]:
    """Ids of the commands status.json reports done: a writer may prune them from control.json."""
    return {c["id"] for c in (status or {}).get("commands") or []}


def iso_to_ms(value: str | None) -> int | None:
    """An ISO-8601 time of status.json (``...Z``) as epoch ms."""
    if not value:
        return None
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


class StatusReader:
    """status.json read cheaply and often: ``poll`` parses the file only when its (inode,
    mtime, size) changed, or every ``force_s`` in case two writes share one fingerprint."""

    def __init__(self, state_dir: Path, force_s: float = 0.05) -> None:
        self.path = Path(state_dir) / STATUS_FILE
        self.force_s = force_s
        self.last: dict | None = None
        self._fingerprint: tuple | None = None
        self._parsed_at = 0.0

    def read(self) -> dict | None:
        try:
            st = os.stat(self.path)
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        self._fingerprint = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._parsed_at = time.monotonic()
        self.last = data
        return data

    def poll(self) -> dict | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        fingerprint = (st.st_ino, st.st_mtime_ns, st.st_size)
        if fingerprint != self._fingerprint or time.monotonic() - self._parsed_at >= self.force_s:
            return self.read()
        return self.last

    def wait(self, pred: Callable[[dict], Any], *, timeout: float, poll: float = 0.001,
             abort: Callable[[], None] | None = None, what: str = "a status.json condition") -> tuple[dict, int]:
        """The first status for which ``pred`` holds, and the monotonic ns it was seen at."""
        def seen() -> tuple[dict, int] | None:
            st = self.poll()
            return (st, time.monotonic_ns()) if st is not None and pred(st) else None

        return wait_until(seen, timeout=timeout, what=what, poll=poll, abort=abort,
                          last_seen=lambda: f"state {(self.last or {}).get('state')!r}, tick "
                                            f"{(self.last or {}).get('tick')!r}")

    def wait_command(self, command_id: str, *, timeout: float, poll: float = 0.002,
                     abort: Callable[[], None] | None = None) -> tuple[dict, dict, int]:
        """A command's result entry, the status that showed it, and the monotonic ns it was seen at."""
        st, seen_ns = self.wait(lambda s: command_result(s, command_id), timeout=timeout, poll=poll,
                                abort=abort, what=f"the result of command {command_id}")
        return command_result(st, command_id), st, seen_ns
