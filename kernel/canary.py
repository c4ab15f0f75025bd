"""Canaries: a new version running on a few slots of a strategy, on a budget.

``reload`` with ``slots`` loads and checks a version exactly as a reload does, then publishes it
for those slots only (the registry pins it for them, kernel/versions/registry.py); the other slots
keep the current version. Within its first ``budget.cycles`` cycles on the canary slots, a cycle
that raised (any fault), missed its deadline, or had an order refused for anything but a halt is a
bad cycle; one more than ``budget.faults`` of them sends the canary slots back to the current
version at once (``auto_rolled_back``, with the reason). ``promote`` makes the canary version
current for every slot; ``rollback`` ends the canary.

A :class:`CanaryRun` is counted on the tick thread only (kernel/cycles.py folds each outcome into
it); the registry holds the running one per strategy, and the last one that ended.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .changes import Changes
from .protocol import ms_to_iso, utcnow_iso
from .slot_runtime import SlotRuntime
from .versions import StrategyVersion

__all__ = ["DEFAULT_BUDGET", "CanaryRun", "bad_cycle", "clear_canary_faults", "parse_budget"]

# Within its first 20 cycles on the canary slots, a second bad cycle sends the canary back.
DEFAULT_BUDGET = {"cycles": 20, "faults": 1}
RECENT_BAD = 10  # bad cycles kept for status.json


def parse_budget(raw: Any) -> dict[str, int]:
    """``{"cycles": N, "faults": K}`` (each optional, defaults DEFAULT_BUDGET); ValueError otherwise."""
    if raw is None:
        return dict(DEFAULT_BUDGET)
    if not isinstance(raw, dict):
        raise ValueError('budget must be an object like {"cycles": 20, "faults": 1}')
    unknown = sorted(set(raw) - set(DEFAULT_BUDGET))
    if unknown:
        raise ValueError(f"budget takes cycles and faults, not {', '.join(unknown)}")
    out = dict(DEFAULT_BUDGET)
    for key, low in (("cycles", 1), ("faults", 0)):
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < low or v > 1_000_000:
                raise ValueError(f"budget.{key} must be a whole number from {low} to 1000000")
            out[key] = v
    return out


def bad_cycle(*, fault: str | None, abandoned: bool, order: dict | None) -> str | None:
    """Why an outcome counts against a canary's budget, or None: a fault (the strategy raised, its
    state or params failed), a cycle past its deadline, an order refused for anything but a halt."""
    if abandoned:
        return "missed its deadline"
    if fault:
        return fault
    if order and order.get("status") == "refused" and order.get("reason") != "halted":
        return f"order refused: {order.get('reason')}: {order.get('error') or ''}".rstrip(": ")
    return None


@dataclass
class CanaryRun:
    version: StrategyVersion
    slots: frozenset[str]
    budget: dict[str, int]
    command_id: str | None = None
    since: str = field(default_factory=utcnow_iso)
    state: str = "running"  # running, passed (budget cycles clean), auto_rolled_back, rolled_back, promoted
    cycles: int = 0  # cycles of the canary version on the canary slots
    faults: int = 0  # bad cycles within the budget's cycles
    reason: str | None = None  # why it was rolled back automatically
    ended_at: str | None = None
    recent_bad: list[dict[str, Any]] = field(default_factory=list)
    faulted: dict[str, str] = field(default_factory=dict)  # slot -> the fault a canary cycle left on it

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def active(self) -> bool:
        return self.state in ("running", "passed")

    def observe(self, slot: str, close_ms: int, bad: str | None, *, count_cycle: bool = True) -> bool:
        """One cycle of the canary version on a canary slot (``bad``: why it counts against the
        budget). True when the budget is exceeded: the canary must go back now."""
        if count_cycle:
            self.cycles += 1
        if bad is not None:
            self.recent_bad = (self.recent_bad + [{"slot": slot, "candle": ms_to_iso(close_ms), "reason": bad}])[
                -RECENT_BAD:]
        if self.state != "running":
            return False
        if bad is not None and self.cycles <= self.budget["cycles"]:
            self.faults += 1
            if self.faults > self.budget["faults"]:
                self.reason = (f"{self.faults} bad cycles within {self.cycles} of a budget of "
                               f"{self.budget['cycles']} cycles, {self.budget['faults']} faults; last: "
                               f"slot {slot} candle {ms_to_iso(close_ms)}: {bad}")
                return True
        if self.cycles >= self.budget["cycles"]:
            self.state = "passed"
        return False

    def end(self, state: str) -> None:
        self.state = state
        self.ended_at = utcnow_iso()

    def describe(self) -> dict[str, Any]:
        return {"version": self.version.number, "sha256": self.version.sha256, "slots": sorted(self.slots),
                "since": self.since, "budget": dict(self.budget), "state": self.state,
                "counts": {"cycles": self.cycles, "faults": self.faults}, "reason": self.reason,
                "ended_at": self.ended_at, "recent_bad": list(self.recent_bad), "command_id": self.command_id}


def clear_canary_faults(run: CanaryRun, slots: dict[str, SlotRuntime], changes: Changes) -> None:
    """A fault the canary's code left on a slot does not outlive the canary (tick thread); any
    other fault (a broker's, a reconciliation's) stays. A slot still busy with a canary cycle (one
    past its deadline) is cleared when that cycle comes back (kernel/cycles.py)."""
    for sid, fault in list(run.faulted.items()):
        s = slots.get(sid)
        if s is not None and s.busy:
            continue
        if s is not None and s.fault == fault:
            s.fault = None
            changes.mark_slot(sid)
        del run.faulted[sid]
