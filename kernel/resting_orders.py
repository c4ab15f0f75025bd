"""Limit orders that rest at the broker: polled, their fills booked as they happen, cancelled
at expiry, before a flatten and before a new order of their slot.

Which orders rest is the ledger's (kernel.ledger_resting: a limit order sent and not final),
so a restart, even after ``kill -9``, finds them again once startup reconciliation has
brought them up to date, and keeps polling them. Each is polled on a thread of its own
(``resting-orders``, never the tick thread, every ``interval_s``: one ``fetch_order`` per
resting order, well inside a broker's rate limit) and at the start of its slot's cycle, so a
strategy decides on a position with every fill booked. A broker that simulates an exchange
(the paper broker) is first handed the closed candles since the order was placed
(``Broker.mark_candle``), which fills what they trade through; a real exchange fills on its
own. Every fill is booked by kernel.order_sync: one ledger transaction per fill, by fill id,
so a fill seen twice (the poll and a cancel, a restart) is booked once.

A new order of a slot whose order rests replaces it: the resting one is cancelled first; if
cancelling it booked fills, the new one is not sent (the cycle decided on an older position:
the next cycle decides again). The halt's sweep (kernel.halt) cancels resting orders with
every other open order.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from .brokers import Broker, BrokerOrder
from .changes import Changes
from .clock import Clock
from .errors import KernelError, OrderNotFound
from .feeds.feed import last_closed_open_ms, timeframe_ms
from .ledger import Ledger
from .ledger_resting import resting_by_slot, resting_orders
from .order_sync import record_broker_order
from .slot_runtime import SlotRuntime

__all__ = ["RestingOrders", "POLL_INTERVAL_S"]

log = logging.getLogger("kernel")

POLL_INTERVAL_S = 1.0
_MAX_CANDLES = 1000  # per order and poll: a kernel down longer than this catches up over several polls


class RestingOrders:
    def __init__(self, *, ledger: Ledger, broker: Broker, clock: Clock, feed: Any, changes: Changes,
                 slot_of: Callable[[str], SlotRuntime | None], interval_s: float = POLL_INTERVAL_S) -> None:
        self._ledger = ledger
        self._broker = broker
        self._clock = clock
        self._feed = feed
        self._changes = changes
        self._slot_of = slot_of
        self._interval_s = interval_s
        self._lock = threading.RLock()  # one poll or cancel at a time: each order's fills booked in order
        self._marked: dict[str, int] = {}  # client id -> open time of the last candle handed to the broker
        self._booked: set[str] = set()  # slots with fills booked since their cycle last polled
        self._booked_lock = threading.Lock()  # apart: a slot with nothing resting never waits on a poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life --------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="resting-orders", daemon=True)
            self._thread.start()

    def close(self, wait_s: float = 5.0) -> None:
        """Stop polling (a poll in progress finishes its booking); the next start resumes."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait_s)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - e.g. the ledger closing at shutdown: try again next time
                log.warning("resting orders: poll failed: %s", exc)

    # -- polling -----------------------------------------------------------------

    def poll(self, slot_id: str | None = None) -> int:
        """One look at the resting orders (all, or ``slot_id``'s); returns how many fills were new.
        A slot's own poll (its cycle's) leaves it up to date: see :meth:`booked_since_poll`."""
        new = 0
        # In memory first (no ledger lock on every cycle); and no wait on another slot's poll
        # at a slow exchange when this one has nothing resting.
        if self._ledger.counters.has_resting(slot_id):
            with self._lock:
                for row in resting_orders(self._ledger, slot_id):
                    try:
                        new += self._poll_one(row)
                    except KernelError as exc:
                        log.warning("resting order %s: broker not reachable: %s", row["client_order_id"], exc)
        if slot_id is not None:
            with self._booked_lock:
                self._booked.discard(slot_id)
        return new

    def booked_since_poll(self, slot_id: str) -> bool:
        """True (once) when fills of ``slot_id`` were booked after its cycle's poll: that cycle
        decided on an older position, so its order must not go (no second entry)."""
        with self._booked_lock:
            if slot_id in self._booked:
                self._booked.discard(slot_id)
                return True
            return False

    def _poll_one(self, row: dict) -> int:
        cid = row["client_order_id"]
        now_ms = self._clock.now_ms()
        expires = row["expires_ms"]
        self._mark_candles(row, now_ms if expires is None else min(now_ms, expires))
        bo = self._broker.fetch_order(cid)
        if bo is None:
            return 0  # not at the broker (yet): reconciliation's to decide, never resent from here
        new = self._record(row, bo)
        if not bo.is_final and expires is not None and now_ms >= expires:
            log.info("slot %s: limit order %s expired: cancelling it", row["slot"], cid)
            new += self._cancel(row)
        if bo.is_final:
            self._marked.pop(cid, None)
        return new

    def _mark_candles(self, row: dict, until_ms: int) -> None:
        """Hand a simulating broker the candles closed since the order was placed, up to ``until_ms``."""
        if type(self._broker).mark_candle is Broker.mark_candle or not row["timeframe"] or row["candle_ms"] is None:
            return
        cid = row["client_order_id"]
        tf = timeframe_ms(row["timeframe"])
        first = max(row["candle_ms"], self._marked.get(cid, row["candle_ms"] - tf) + tf)
        last = last_closed_open_ms(until_ms, tf)
        if last < first:
            return
        count = min(_MAX_CANDLES, (last - first) // tf + 1)
        candles = self._feed.candles(row["symbol"], row["timeframe"], min(first + count * tf, last + tf), count)
        for candle in candles:
            if candle.ts < first:
                continue
            self._broker.mark_candle(row["symbol"], candle)
            self._marked[cid] = candle.ts

    def _record(self, row: dict, bo: BrokerOrder) -> int:
        new = record_broker_order(ledger=self._ledger, client_order_id=row["client_order_id"], order=bo)
        if new or bo.is_final:
            slot = self._slot_of(row["slot"])
            if slot is not None:
                slot.take_position(self._ledger.position(row["slot"]))
                self._changes.mark_slot(row["slot"])
            if new:
                with self._booked_lock:
                    self._booked.add(row["slot"])
                log.info("slot %s: limit order %s: %d new fill(s), %s", row["slot"], row["client_order_id"],
                         new, bo.status)
        return new

    def _cancel(self, row: dict) -> int:
        try:
            bo = self._broker.cancel_order(row["client_order_id"])
        except OrderNotFound:
            return 0
        self._marked.pop(row["client_order_id"], None)
        return self._record(row, bo)

    # -- what the order path asks ---------------------------------------------------

    def cancel_slot(self, slot_id: str) -> tuple[int, int]:
        """Cancel ``slot_id``'s resting orders (a new order replaces them, a flatten sells what they
        bought): polled first, so every fill up to now is booked. Returns (cancelled, new fills)."""
        cancelled = new = 0
        with self._lock:
            for row in resting_orders(self._ledger, slot_id):
                new += self._poll_one(row)
                if self._still_open(row):
                    new += self._cancel(row)
                    cancelled += 1
        return cancelled, new

    def _still_open(self, row: dict) -> bool:
        order = self._ledger.order(row["client_order_id"])
        return order is not None and order["status"] in ("sent", "open")

    def has_resting(self, slot_id: str) -> bool:
        return self._ledger.counters.has_resting(slot_id)

    def by_slot(self) -> dict[str, list[dict]]:
        """Each slot's resting orders (status.json's ``slots[].resting_orders``)."""
        return resting_by_slot(self._ledger)
