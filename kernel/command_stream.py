"""Commands from control.json applied in file order, each exactly once, each result recorded.

A command's result is recorded in one ledger transaction together with every state change
made before it, so a ``kill -9`` cannot leave a command remembered as applied without its
effect. Applied ids live in the ledger: a command delivered again is never re-applied,
and one whose result has scrolled out of status.json is reported again, once.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any

from .command_handlers import CommandContext, Deferred, apply_command
from .crash_points import crash_point
from .errors import BadCommand, ReloadFailed
from .log_setup import command_logging
from .protocol import Command, utcnow_iso

__all__ = ["CommandStream", "RECENT"]

log = logging.getLogger("kernel")

RECENT = 200  # how many command results status.json keeps


class CommandStream:
    def __init__(self, *, context: CommandContext) -> None:
        self._context = context
        self._control = context.control
        self._ledger = context.ledger
        self._run = context.run_state
        self._slots = context.slots
        self._changes = context.changes
        self._applied_ids: set[str] = set()
        self._reannounced: set[str] = set()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)  # newest last, for status.json
        self.pending_ids: list[str] = []
        self._running: tuple[Command, Deferred] | None = None  # the deferred command later ones wait for

    @property
    def busy(self) -> bool:
        """A command's work is still running."""
        return self._running is not None

    def restore(self) -> None:
        """At startup: the ids applied before, and the latest results, from the ledger."""
        self._applied_ids = self._ledger.applied_command_ids()
        for row in self._ledger.recent_commands(RECENT):
            self.recent.append(
                {"id": row["id"], "action": row["action"], "slot": row["slot"], "result": row["result"],
                 "error": row["error"], "at": row["at"], "detail": row["detail"]}
            )

    def process(self) -> None:
        if self._running is not None:
            cmd, (fut, finish) = self._running
            if not fut.done():
                self.pending_ids = self._pending()
                return
            self._running = None
            with command_logging(cmd.id):  # the lines logged while it finishes name it (kernel/log_setup.py)
                try:
                    result, error, detail = finish(fut.result())
                except BadCommand as exc:
                    result, error, detail = "rejected", str(exc), None
                except ReloadFailed as exc:
                    result, error, detail = "rejected", f"{exc.stage}: {exc}", None
                except Exception as exc:  # noqa: BLE001 - a bug must not stop the command stream
                    log.exception("command %s failed", cmd.id)
                    result, error, detail = "rejected", f"internal error: {type(exc).__name__}: {exc}", None
                self._finish(cmd, result, error, detail)
        recent_ids: set[str] | None = None
        for cmd in self._control.commands:
            if cmd.id in self._applied_ids:
                if cmd.id not in self._reannounced:
                    # Re-sent after its result scrolled out of status.json (a console that
                    # was away): report the stored result again, once; never re-apply.
                    self._reannounced.add(cmd.id)
                    if recent_ids is None:
                        recent_ids = {e["id"] for e in self.recent}
                    if cmd.id not in recent_ids:
                        self._reannounce(cmd.id)
                continue
            with command_logging(cmd.id):  # the lines logged while it applies name it (kernel/log_setup.py)
                try:
                    outcome = apply_command(self._context, cmd)
                except BadCommand as exc:
                    self._finish(cmd, "rejected", str(exc), None)
                    continue
                except Exception as exc:  # noqa: BLE001
                    log.exception("command %s failed", cmd.id)
                    self._finish(cmd, "rejected", f"internal error: {type(exc).__name__}: {exc}", None)
                    continue
                if isinstance(outcome, Deferred):
                    self._running = (cmd, outcome)
                    break  # later commands wait: file order is apply order
                detail = outcome if isinstance(outcome, dict) else None
                self._finish(cmd, "applied", None, detail)
        self.pending_ids = self._pending()

    def _reannounce(self, command_id: str) -> None:
        row = self._ledger.command_result(command_id)
        if row is None:
            return
        detail = dict(row["detail"] or {})
        detail["reported_again"] = True
        self.recent.append({"id": row["id"], "action": row["action"], "slot": row["slot"],
                            "result": row["result"], "error": row["error"], "at": row["at"],
                            "detail": detail})
        self._changes.status_urgent = True

    def _pending(self) -> list[str]:
        return [c.id for c in self._control.commands if c.id not in self._applied_ids][:100]

    def _finish(self, cmd: Command, result: str, error: str | None, detail: dict | None) -> None:
        at = utcnow_iso()
        if cmd.issued_by:
            # Kept with the result, so a command written by hand is audited under the name it gives.
            detail = {**(detail or {}), "issued_by": cmd.issued_by}
        # The result, and every state change so far (the command's own included), in one
        # transaction: a kill -9 cannot leave a command remembered as applied without its effect.
        records, ids = self._changes.take()
        self._ledger.record_command(
            id=cmd.id, action=cmd.action, slot=cmd.slot, result=result, error=error, at=at,
            detail=detail, meta={"running": self._run.running, "paused": self._run.paused},
            slots=[self._slots[i].persist_row() for i in ids if i in self._slots], cycles=records,
        )
        crash_point("command_recorded")
        self._applied_ids.add(cmd.id)
        entry = {"id": cmd.id, "action": cmd.action, "slot": cmd.slot, "result": result,
                 "error": error, "at": at, "detail": detail}
        self.recent.append(entry)
        self._changes.status_urgent = True
        (log.info if result == "applied" else log.warning)(
            "command %s %s%s: %s%s", cmd.id, cmd.action, f" {cmd.slot}" if cmd.slot else "", result,
            f" ({error})" if error else "", extra={"command_id": cmd.id},
        )
