"""Crash injection for the crash-safety tests: ``kill -9`` the kernel at a named point.

``FORESIGHT_CRASH_AT=<point>:<nth>[,<point>:<nth>...]`` in the kernel's environment
makes the ``nth`` time (counted from 1, per process) that the code reaches
``crash_point(<point>)`` end the process with SIGKILL: no ``finally``, no atexit, no
flush, exactly like a power cut or the OOM killer. The variable is read once, when
this module is imported; nothing else (not control.json, not a command) can arm it.
Unset, ``crash_point`` is a single ``is None`` check.

The points in an order's life, in order:

- ``intents_committed``: the commit holding a batch of intents (kernel.intent_batch: the
  orders decided together) is on disk, no order of that batch has been sent;
- ``intent_recorded``: the intent is in the ledger, the gate has not passed it;
- ``order_marked_sent``: the gate passed it, the ledger says "sent", the broker has not seen it;
- ``paper_before_commit``: the paper exchange is writing it (the kill rolls that back);
- ``paper_after_commit``: the paper exchange has it (and, for a market order, its fill);
- ``order_placed``: the broker answered, nothing of the answer is in the ledger yet;
- ``fill_recorded``: one fill is in the ledger, the order's final status is not
  (also reached while reconciling at startup).

And one in a batch's: ``intent_batch_part_sent``: one order of a committed batch is at the
broker (nothing of its answer recorded), another of the same batch has not started on its
way there (reached only when a commit carried two or more intents). And one in a command's
life: ``command_recorded``: the ledger remembers the command as applied (with the state it
changed); the tick that applied it has not finished. And one in a version's:
``store_partial``: a release store entry is half-written (its temporary folder holds one
file; kernel/release_store.py).
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Callable

__all__ = ["CRASH_ENV", "POINTS", "BATCH_POINTS", "COMMAND_POINTS", "crash_point", "paper_crash_hook", "parse_plan"]

CRASH_ENV = "FORESIGHT_CRASH_AT"
POINTS = (
    "intents_committed",
    "intent_recorded",
    "order_marked_sent",
    "paper_before_commit",
    "paper_after_commit",
    "order_placed",
    "fill_recorded",
)
# Reached only by a batch of two or more intents: not every run reaches it, so not in POINTS.
BATCH_POINTS = ("intent_batch_part_sent",)
# Points outside an order's life (kept apart: tests iterate over POINTS as "an order's life").
COMMAND_POINTS = ("command_recorded", "store_partial")


def parse_plan(text: str | None) -> dict[str, int] | None:
    """``"order_placed:3,fill_recorded:1"`` -> ``{"order_placed": 3, "fill_recorded": 1}``.
    None for an unset or empty value; ValueError for anything malformed (a typo must not
    silently make a crash test pass)."""
    if not text or not text.strip():
        return None
    plan: dict[str, int] = {}
    for part in text.split(","):
        point, sep, nth = part.strip().partition(":")
        if point not in POINTS + BATCH_POINTS + COMMAND_POINTS or not sep or not nth.isdigit() or int(nth) < 1:
            raise ValueError(
                f"{CRASH_ENV}: {part!r} is not <point>:<nth> with point one of {', '.join(POINTS + BATCH_POINTS + COMMAND_POINTS)} and nth >= 1"
            )
        plan[point] = int(nth)
    return plan


_PLAN = parse_plan(os.environ.get(CRASH_ENV))
_SEEN: dict[str, int] = {}
_LOCK = threading.Lock()


def crash_point(point: str) -> None:
    """SIGKILL this process if the crash plan says so for this occurrence of ``point``."""
    if _PLAN is None:
        return
    nth = _PLAN.get(point)
    if nth is None:
        return
    with _LOCK:
        _SEEN[point] = _SEEN.get(point, 0) + 1
        due = _SEEN[point] == nth
    if due:
        os.kill(os.getpid(), signal.SIGKILL)


def paper_crash_hook() -> Callable[[str], None] | None:
    """The paper broker's ``crash_hook`` (``before_commit`` -> ``paper_before_commit``...),
    or None when no crash is planned."""
    if _PLAN is None:
        return None
    return lambda where: crash_point(f"paper_{where}")
