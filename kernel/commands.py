"""Issuing commands to a kernel through its state dir, and waiting for their results.

Used by kernelctl and by the console's services: both write control.json only through
here (and kernel.control), so a command always has a unique id, a known action, and
lands in the file atomically under the writers' lock.
"""
from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from .control import (
    CONTROL_FILE,
    STATUS_FILE,
    StatusUnreadable,
    append_commands,
    clear_halt_and_release,
    done_command_ids,
    new_command_id,
    read_status,
    set_halt,
)
from .errors import BadCommand
from .protocol import ACTIONS, SLOT_ACTIONS, Command, CommandStatus, Status, utcnow_iso

log = logging.getLogger("kernel.commands")
LEDGER_FILE = "ledger.sqlite3"


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def build_command(
    action: str,
    slot: str | None = None,
    args: dict[str, Any] | None = None,
    *,
    command_id: str | None = None,
    issued_by: str | None = None,
) -> Command:
    """A valid command or BadCommand with a message for the operator."""
    if action not in ACTIONS:
        raise BadCommand(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    if action in SLOT_ACTIONS and not slot:
        raise BadCommand(f"{action} needs a slot")
    if action not in SLOT_ACTIONS and slot:
        raise BadCommand(f"{action} is a kernel action and takes no slot")
    if action == "rollback" and not (args or {}).get("strategy"):
        raise BadCommand("rollback needs a strategy")
    try:
        return Command(
            id=command_id or new_command_id(),
            action=action,
            slot=slot,
            args=dict(args or {}),
            issued_by=issued_by,
            issued_at=utcnow_iso(),
        )
    except ValueError as exc:
        raise BadCommand(str(exc)) from exc


def _done_ids(state_dir: Path) -> set[str]:
    try:
        status = read_status(Path(state_dir) / STATUS_FILE)
    except StatusUnreadable:
        return set()
    return done_command_ids(status) if status else set()


def send(state_dir: Path, command: Command) -> Command:
    """Append one command to control.json (release also clears the halt flag in the same
    write). Commands the kernel reports done are pruned from the file as it goes."""
    state_dir = Path(state_dir)
    if command.action == "release":
        clear_halt_and_release(state_dir, command)
    else:
        append_commands(state_dir, [command], prune_ids=_done_ids(state_dir) - {command.id})
    return command


def halt(state_dir: Path, reason: str | None, by: str | None = None) -> None:
    set_halt(Path(state_dir), reason, by)


def status(state_dir: Path) -> Status | None:
    return read_status(Path(state_dir) / STATUS_FILE)


def wait_result(state_dir: Path, command_id: str, timeout_s: float, poll_s: float = 0.05) -> dict | None:
    """The kernel's result for ``command_id`` from status.json, or None on timeout."""
    deadline = time.monotonic() + timeout_s
    path = Path(state_dir) / STATUS_FILE
    while True:
        try:
            st = read_status(path)
        except StatusUnreadable:
            st = None
        if st is not None:
            for c in st.commands:
                if c.id == command_id:
                    return c.model_dump(mode="json")
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)


def wait_state(state_dir: Path, states: set[str], timeout_s: float, poll_s: float = 0.02) -> Status | None:
    deadline = time.monotonic() + timeout_s
    path = Path(state_dir) / STATUS_FILE
    while True:
        try:
            st = read_status(path)
        except StatusUnreadable:
            st = None
        if st is not None and st.state in states:
            return st
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)


def stored_results(state_dir: Path, ids: list[str]) -> dict[str, CommandStatus]:
    """The kernel's results for ``ids`` from its ledger, opened read-only.

    status.json lists the latest 200 results; the ledger keeps every one, so a burst that
    scrolled past status.json is still resolved (and never re-sent). Empty when the ledger
    cannot be read: nothing is concluded from an absence.
    """
    ids = list(ids)
    path = Path(state_dir) / LEDGER_FILE
    if not ids or not path.is_file():
        return {}
    out: dict[str, CommandStatus] = {}
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
        try:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows = con.execute(
                    "SELECT id, action, slot, result, error, detail, at FROM commands "
                    f"WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                for cid, action, slot, result, error, detail, at in rows:
                    out[cid] = CommandStatus(id=cid, action=action, slot=slot, result=result, error=error,
                                             at=at, detail=json.loads(detail) if detail else None)
        finally:
            con.close()
    except (sqlite3.Error, ValueError) as exc:
        log.warning("could not read command results from %s: %s", path, exc)
        return {}
    return out


__all__ = ["CONTROL_FILE", "build_command", "default_actor", "halt", "send", "status",
           "stored_results", "wait_result", "wait_state"]
