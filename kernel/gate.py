"""The order gate: the one door every order goes through.

It refuses every strategy order once a halt is seen (in-flight cycles included), any
order of a cycle past its deadline, entries while paused, and orders over a slot's
risk limits. The final check and the halt share one lock, so an order either passed
strictly before the halt was observed or not at all.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from . import metrics
from .errors import GateRefused


class OrderGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._in_transit = 0  # orders passed, whose broker answer is not recorded yet
        self._halted = False
        self.halt_observed_ns: int | None = None
        self.halt_observed_at_ns: int | None = None  # the same instant, wall clock (time.time_ns)
        self.last_pass_ns: int | None = None
        self.passed = 0
        self.refused: dict[str, int] = defaultdict(int)
        self._recent: dict[str, deque[int]] = defaultdict(deque)  # slot -> clock ms of passes

    @property
    def halted(self) -> bool:
        """The halt flag, set first of all when a halt is observed. A plain read, no lock:
        workers check it right before every strategy call."""
        return self._halted

    def engage_halt(self) -> int:
        """From now on no strategy order passes. Returns the observation time (ns)."""
        with self._lock:
            if not self._halted:
                self._halted = True
                # Both taken after the flag is set: a strategy call that checked the flag
                # after these instants found it set.
                self.halt_observed_ns = time.monotonic_ns()
                self.halt_observed_at_ns = time.time_ns()
            return self.halt_observed_ns  # type: ignore[return-value]

    def release_halt(self) -> None:
        with self._lock:
            self._halted = False
            self.halt_observed_ns = None
            self.halt_observed_at_ns = None

    def refuse(self, reason: str, message: str) -> GateRefused:
        self.refused[reason] += 1
        metrics.gate_refused(reason=reason)
        return GateRefused(reason, message)

    def check_risk(
        self,
        *,
        slot: str,
        intent: str,
        qty: float,
        price: float,
        position_qty: float,
        max_position: float | None,
        max_notional: float,
        max_orders_per_minute: int,
        now_ms: int,
    ) -> None:
        """Pre-trade limits. Exits only ever reduce risk, so only the rate limit applies
        to them (a stuck exit must not be blocked by a size limit)."""
        if intent == "entry":
            new_qty = position_qty + qty
            if max_position is not None and new_qty > max_position * (1 + 1e-9):
                raise self.refuse(
                    "max_position",
                    f"position {new_qty:.8g} would exceed max_position {max_position:.8g}",
                )
            if new_qty * price > max_notional * (1 + 1e-9):
                raise self.refuse(
                    "max_notional",
                    f"notional {new_qty * price:.2f} would exceed max_notional {max_notional:.2f}",
                )
        recent = self._recent[slot]
        while recent and recent[0] <= now_ms - 60_000:
            recent.popleft()
        if intent != "flatten" and len(recent) >= max_orders_per_minute:
            raise self.refuse(
                "rate", f"{len(recent)} orders in the last minute (max {max_orders_per_minute})"
            )

    def pass_order(
        self,
        *,
        slot: str,
        intent: str,
        now_ms: int,
        abandoned: bool = False,
        deadline_passed: bool = False,
        entries_allowed: bool = True,
    ) -> int:
        """The final check, atomic with the halt. Returns the pass time (monotonic ns)."""
        with self._lock:
            if self._halted and intent != "flatten":
                raise self.refuse("halted", "halted: no strategy order passes the gate")
            if abandoned or deadline_passed:
                raise self.refuse("deadline", "the cycle is past its deadline; its orders are refused")
            if intent == "entry" and not entries_allowed:
                raise self.refuse("paused", "entries are paused")
            now_ns = time.monotonic_ns()
            self.last_pass_ns = now_ns
            self.passed += 1
            self._in_transit += 1  # the caller must call order_settled() once it is recorded
            self._recent[slot].append(now_ms)
            return now_ns

    def order_settled(self) -> None:
        """An order that passed is answered (or failed) and recorded: no longer in transit."""
        with self._lock:
            self._in_transit = max(0, self._in_transit - 1)
            if self._in_transit == 0:
                self._settled.notify_all()

    @property
    def in_transit(self) -> int:
        return self._in_transit

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every order that passed is recorded (a halt's cancel sweep and ledger
        flush must include the orders that passed just before it). False on timeout."""
        with self._lock:
            return self._settled.wait_for(lambda: self._in_transit == 0, timeout)
