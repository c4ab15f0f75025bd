"""The control-plane client: commands and the halt into a kernel's state dir, results out.

Used by kernelctl and by the console's services: both write control.json only through
here (and kernel.control), so a command always has a unique id, a known action, and
lands in the file atomically under the writers' lock. Results come from status.json,
and from the kernel's ledger (read-only) for those status.json no longer lists.
"""
from __future__ import annotations

import logging
import os
import pwd
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

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
from .ledger import LEDGER_FILE, Ledger
from .protocol import ACTIONS, SLOT_ACTIONS, Command, CommandStatus, Status, utcnow_iso

log = logging.getLogger("kernel.control_client")


def default_actor() -> str:
    """The real user: from the process's uid, never from $LOGNAME/$USER, which anyone can set."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no passwd entry in some containers
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


def halt(state_dir: Path, reason: str | None, by: str | None = None, *, command_id: str | None = None) -> None:
    set_halt(Path(state_dir), reason, by, command_id=command_id)


def status(state_dir: Path) -> Status | None:
    return read_status(Path(state_dir) / STATUS_FILE)


def _wait_status(state_dir: Path, found: Callable[[Status], Any], timeout_s: float, poll_s: float) -> Any:
    """The first truthy ``found(status)`` while status.json is polled, or None on timeout
    (a status.json being replaced or not yet written counts as "not yet")."""
    deadline = time.monotonic() + timeout_s
    path = Path(state_dir) / STATUS_FILE
    while True:
        try:
            st = read_status(path)
        except StatusUnreadable:
            st = None
        value = found(st) if st is not None else None
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)


def wait_result(state_dir: Path, command_id: str, timeout_s: float, poll_s: float = 0.05) -> dict | None:
    """The kernel's result for ``command_id`` from status.json, or None on timeout."""
    def result(st: Status) -> dict | None:
        return next((c.model_dump(mode="json") for c in st.commands if c.id == command_id), None)

    return _wait_status(state_dir, result, timeout_s, poll_s)


def wait_state(state_dir: Path, states: set[str], timeout_s: float, poll_s: float = 0.02) -> Status | None:
    """status.json once the kernel's state is one of ``states``, or None on timeout."""
    return _wait_status(state_dir, lambda st: st if st.state in states else None, timeout_s, poll_s)


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
    try:
        ledger = Ledger(path, read_only=True)
        try:
            rows = ledger.command_results(ids)
        finally:
            ledger.close()
        return {cid: CommandStatus(id=cid, action=r["action"], slot=r["slot"], result=r["result"],
                                   error=r["error"], at=r["at"], detail=r["detail"])
                for cid, r in rows.items()}
    except (sqlite3.Error, ValueError) as exc:
        log.warning("could not read command results from %s: %s", path, exc)
        return {}


__all__ = ["CONTROL_FILE", "build_command", "default_actor", "halt", "send", "status",
           "stored_results", "wait_result", "wait_state"]
