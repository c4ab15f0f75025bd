"""Shadows: a new version evaluated beside the live one, never trading.

``reload`` with ``"shadow": true`` loads and checks a version exactly as a reload does, then keeps
it beside the current one: after each live cycle of the strategy's slots, the live cycle hands the
context it ran on (candles, close, position, params) and its decision to the shadow, which
evaluates the new version on that same context with its own state, kept per slot and apart from
the live state, and compares the two decisions. It sends no order: nothing here reaches the order
path.

Shadow work never delays a live cycle: a live cycle only offers its context (never blocking), and
the shadow evaluates on a thread of its own. A slot whose previous offer is still waiting is
skipped and counted, so a slow or hanging shadow costs shadow evaluations, never live ones. No
shadow call starts once a halt is observed (``halted``: the order gate's flag, read before each
strategy call). After ``cycles`` evaluations of a slot that slot is done; once every slot is,
the shadow is done (status says so) and waits for ``promote`` or ``rollback``.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import StrategyFault
from .protocol import ms_to_iso, utcnow_iso
from .strategy_api import Candle
from .versions import StrategyVersion
from .versions.checks import ContextFailed, Halted, SmokeSample, build_context, run_evaluate

__all__ = ["DEFAULT_SHADOW_CYCLES", "ShadowRun"]

log = logging.getLogger("kernel")

DEFAULT_SHADOW_CYCLES = 50
RECENT_DIFFERENCES = 10  # per slot, for status.json


@dataclass
class _SlotShadow:
    evaluations: int = 0
    differences: int = 0
    skipped: int = 0  # offers not evaluated: the previous one was still waiting, or a halt
    faults: int = 0
    busy_us: int = 0  # time the shadow spent on this slot's evaluations (its thread, not the live cycle's)
    last_fault: str | None = None
    state: dict[str, Any] | None = None  # the shadow's own state (None: start from the live one)
    state_schema: int | None = None
    pending: bool = False
    last_differences: deque = field(default_factory=lambda: deque(maxlen=RECENT_DIFFERENCES))


class _LiveCandles:
    """The live cycle's candles, as the shadow's feed: the same context, fetched from the feed only
    when the shadow version wants more warm-up than the live one had."""

    def __init__(self, candles: tuple, feed: Any) -> None:
        self._candles = candles
        self._feed = feed

    def candles(self, symbol: str, timeframe: str, end_close_ms: int, limit: int) -> list[Candle]:
        if limit <= len(self._candles) or self._feed is None:
            return list(self._candles[-limit:]) if limit > 0 else []
        return self._feed.candles(symbol, timeframe, end_close_ms, limit)


class ShadowRun:
    def __init__(self, version: StrategyVersion, slots: list[str], *, cycles: int, feed: Any,
                 halted: Callable[[], bool], command_id: str | None = None) -> None:
        self.version = version
        self.slots = frozenset(slots)
        self.cycles = cycles
        self.command_id = command_id
        self.since = utcnow_iso()
        self.fault: str | None = None  # a fault that stopped the whole shadow (module state changed)
        self._feed = feed
        self._halted = halted
        self._lock = threading.Lock()
        self._per_slot = {s: _SlotShadow() for s in slots}
        self._queue: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._ended = False
        self._thread = threading.Thread(target=self._loop, name=f"shadow-{version.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def done(self) -> bool:
        with self._lock:
            return self.fault is not None or all(p.evaluations >= self.cycles for p in self._per_slot.values())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No shadow call starts from now on (promote, rollback)."""
        with self._lock:
            self._ended = True
        self._queue.put(None)

    # ------------------------------------------------------------ a live cycle's worker

    def offer(self, sample: SmokeSample, *, close_ms: int, candles: tuple, live: str, live_reason: str | None) -> None:
        """The context a live cycle ran on and its decision: queued for the shadow, never waited
        for. Skipped (and counted) when the slot's previous offer still waits or a halt is seen."""
        with self._lock:
            p = self._per_slot.get(sample.slot)
            if p is None or self._ended or self.fault is not None or p.evaluations >= self.cycles:
                return
            if p.pending or self._halted():
                p.skipped += 1
                return
            p.pending = True
            if p.state is None:  # the shadow's state starts as a copy of the live one, then goes its own way
                p.state, p.state_schema = dict(sample.state), sample.state_schema
        self._queue.put((sample, close_ms, candles, live, live_reason))

    # ------------------------------------------------------------ the shadow's thread

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._evaluate(*item)
            except Exception:  # noqa: BLE001 - never the kernel's problem
                log.exception("shadow %s: evaluation crashed", self.name)
            if self.done:
                log.info("shadow %s v%s: done", self.name, self.version.number)
                return

    def _evaluate(self, sample: SmokeSample, close_ms: int, candles: tuple, live: str,
                  live_reason: str | None) -> None:
        p = self._per_slot[sample.slot]
        with self._lock:
            p.pending = False
            if self._ended:
                return
            own = SmokeSample(slot=sample.slot, symbol=sample.symbol, timeframe=sample.timeframe,
                              params=sample.params, position=sample.position, entry_price=sample.entry_price,
                              state=dict(p.state or {}), state_schema=p.state_schema,
                              entries_allowed=sample.entries_allowed)
        t0 = time.perf_counter_ns()
        try:
            ctx = build_context(self.version, own, close_ms=close_ms, feed=_LiveCandles(candles, self._feed),
                                should_stop=self._halted)
            decision = run_evaluate(self.version, ctx, self._halted)
            if self.version.state_changed():
                with self._lock:
                    self.fault = "evaluate changed module-level state: strategies must be stateless"
                return
            if decision.state is not None:
                json.dumps(decision.state)
        except Halted:
            with self._lock:
                p.skipped += 1
            return
        except (ContextFailed, StrategyFault, TypeError, ValueError) as exc:
            with self._lock:
                p.busy_us += (time.perf_counter_ns() - t0) // 1000
                p.faults += 1
                p.last_fault = f"candle {ms_to_iso(close_ms)}: {exc}"[:300]
                p.evaluations += 1
            return
        with self._lock:
            p.busy_us += (time.perf_counter_ns() - t0) // 1000
            p.evaluations += 1
            if decision.state is not None:
                p.state, p.state_schema = decision.state, self.version.state_schema
            if decision.action != live:
                p.differences += 1
                p.last_differences.append({
                    "candle": ms_to_iso(close_ms), "live": live, "shadow": decision.action,
                    "live_reason": (live_reason or "")[:120], "shadow_reason": (decision.reason or "")[:120]})

    # ------------------------------------------------------------ status.json (tick thread)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            per_slot = {s: {"evaluations": p.evaluations, "differences": p.differences, "skipped": p.skipped,
                            "faults": p.faults, "busy_us": p.busy_us, "last_fault": p.last_fault, "done": p.evaluations >= self.cycles,
                            "last_differences": list(p.last_differences)}
                        for s, p in sorted(self._per_slot.items())}
            counts = {k: sum(v[k] for v in per_slot.values())
                      for k in ("evaluations", "differences", "skipped", "faults", "busy_us")}
            done = self.fault is not None or all(v["done"] for v in per_slot.values())
        return {"version": self.version.number, "sha256": self.version.sha256, "slots": sorted(self.slots),
                "since": self.since, "cycles": self.cycles, "done": done, "fault": self.fault,
                "counts": counts, "per_slot": per_slot, "command_id": self.command_id}
