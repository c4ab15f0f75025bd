"""Orders final at the broker whose trades are not known yet ("final, trades pending").

Such an order moved the account but not yet the ledger (kernel.order_sync books nothing
from it: never one fill with fee 0). Its trades are fetched again until they are known:
on a thread of their own (``trades-pending``, never the tick thread), backing off from
0.2 s to 30 s, and before its slot may send another order. Once they are booked, the slot's
position is refreshed, and the slot's next order is refused once ("resolved"): the cycle
that wanted it decided on the position before the trades were booked.
"""
from __future__ import annotations

import logging
import threading

from .brokers import Broker
from .errors import KernelError
from .ledger import Ledger
from .order_sync import record_broker_order, trades_pending
from .slot_runtime import SlotRuntime

__all__ = ["PendingTrades"]

log = logging.getLogger("kernel")

FIRST_WAIT_S = 0.2
MAX_WAIT_S = 30.0


class PendingTrades:
    def __init__(self, *, ledger: Ledger, broker: Broker) -> None:
        self._ledger = ledger
        self._broker = broker
        self._lock = threading.Lock()  # booking and the flags below, against a slot's next order
        self._slots: dict[str, SlotRuntime] = {}  # slots with trades pending, to refresh once booked
        self._booked: set[str] = set()  # slots whose trades were booked since their cycle decided
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def close(self, wait_s: float = 5.0) -> None:
        """Stop looking and let a lookup in progress finish its booking (the kernel stops; its
        next start reconciles what is still pending)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait_s)

    def watch(self, slot: SlotRuntime) -> None:
        """``slot`` has an order whose trades are pending: look them up in the background."""
        with self._lock:
            self._slots[slot.id] = slot
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="trades-pending", daemon=True)
                self._thread.start()

    def before_order(self, slot: SlotRuntime) -> str | None:
        """Why ``slot`` may not send an order now (its trades are pending, or were just booked:
        its cycle decided on an older position), or None. Fetches its pending trades once."""
        with self._lock:
            if slot.id in self._booked:
                self._booked.discard(slot.id)
                return "resolved"
            pending = any(r["slot"] == slot.id for r in self._ledger.trades_pending())
            if pending:
                self._slots.setdefault(slot.id, slot)
        if not pending:
            return None
        left = self.resolve(slot.id)
        with self._lock:
            self._booked.discard(slot.id)
        return "trades_pending" if left else "resolved"

    def resolve(self, slot_id: str | None = None) -> bool:
        """Fetch the pending orders (all, or ``slot_id``'s) and book their trades; True while
        some are still pending."""
        left = False
        for row in self._ledger.trades_pending():
            if slot_id is not None and row["slot"] != slot_id:
                continue
            cid = row["client_order_id"]
            try:
                bo = self._broker.fetch_order(cid)
            except KernelError as exc:
                log.warning("order %s: trades still unknown: %s", cid, exc)
                left = True
                continue
            if bo is None or trades_pending(bo):
                left = True
                continue
            with self._lock:
                record_broker_order(ledger=self._ledger, client_order_id=cid, order=bo)
                slot = self._slots.pop(row["slot"], None)
                if slot is not None:
                    slot.take_position(self._ledger.position(row["slot"]))
                self._booked.add(row["slot"])
            log.info("slot %s: the trades of order %s are booked", row["slot"], cid)
        return left

    def _run(self) -> None:
        wait = FIRST_WAIT_S
        while not self._stop.wait(wait):
            try:
                left = self.resolve()
                with self._lock:
                    if not left and not self._ledger.trades_pending():  # none left, none new
                        self._thread = None
                        return
            except Exception as exc:  # noqa: BLE001 - e.g. the ledger closed at shutdown: the next start reconciles
                log.warning("trades pending: lookups stopped: %s", exc)
                with self._lock:
                    self._thread = None
                return
            wait = min(MAX_WAIT_S, wait * 2)
        with self._lock:
            self._thread = None
