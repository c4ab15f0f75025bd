"""The halt: its state, engaging and releasing it, and the sweep that cancels resting orders.

Engaged, the halt is latched until an explicit release: the order gate refuses every
strategy order, no cycle is dispatched, and resting orders are cancelled on a thread of
their own (a slow exchange must not hold the tick thread) before the ledger is flushed.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from . import metrics
from .brokers import Broker
from .changes import Changes
from .gate import OrderGate
from .ledger import Ledger
from .log_setup import command_logging
from .order_sync import record_broker_order
from .protocol import utcnow_iso

__all__ = ["HaltState", "HaltController"]

log = logging.getLogger("kernel")

# The keys that only a halt engaged at some point carries; None here means "not set",
# so that a kernel never halted reports exactly the four keys it always has.
_OPTIONAL = ("cancel_failed", "cancels_pending", "observed_ns", "observed_at_ns", "flushed_at", "command_id")


@dataclass(frozen=True)
class HaltState:
    """One halt as the ledger stores it and status.json reports it. Replaced, never
    changed in place: the cancel sweep's thread and the tick thread read it unlocked."""

    engaged: bool = False
    since: str | None = None
    reason: str | None = None
    cancelled_orders: list[str] = field(default_factory=list)
    cancel_failed: list[dict[str, Any]] | None = None
    cancels_pending: bool | None = None
    observed_ns: int | None = None  # when the gate saw it (monotonic ns); never in status.json
    # The same instant on the wall clock (time.time_ns()), in status.json: no strategy call
    # starts after it until the release.
    observed_at_ns: int | None = None
    flushed_at: str | None = None  # set once the cancels are done and the ledger flushed
    command_id: str | None = None  # the halt block's "id" in control.json, when it had one

    def as_dict(self) -> dict[str, Any]:
        """As the ledger stores it and a release reports it: every key that is set."""
        out: dict[str, Any] = {"engaged": self.engaged, "since": self.since, "reason": self.reason,
                               "cancelled_orders": self.cancelled_orders}
        for key in _OPTIONAL:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def status(self) -> dict[str, Any]:
        """status.json's ``halt``."""
        out = self.as_dict()
        out.pop("observed_ns", None)
        return out

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> HaltState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in known})


class HaltController:
    def __init__(self, *, gate: OrderGate, ledger: Ledger, broker: Broker, changes: Changes,
                 cancel_wait_ms: int, settle_timeout_ms: int) -> None:
        self._gate = gate
        self._ledger = ledger
        self._broker = broker
        self._changes = changes
        self._cancel_wait_s = cancel_wait_ms / 1000.0
        self._settle_timeout_s = settle_timeout_ms / 1000.0
        self.state = HaltState()
        self.observed_tick: int | None = None
        self.thread: threading.Thread | None = None  # the latest cancel sweep

    @property
    def engaged(self) -> bool:
        return self.state.engaged

    def restore(self, stored: Any) -> None:
        """At startup: a halt the ledger remembers is still engaged."""
        if isinstance(stored, dict) and stored.get("engaged"):
            self.state = HaltState.from_dict(stored)
            self._gate.engage_halt()

    def engage(self, reason: str | None, *, source: str, tick: int, command_id: str | None = None,
               record: bool = True) -> None:
        """No strategy order passes the gate from now on; recorded and logged. The
        caller publishes the status, then starts the cancels. ``record=False``: the caller
        records it (:meth:`record`) once the status is on its way: the tick thread runs no
        SQL and writes no file between reading control.json and closing the gate, nor
        before the halted status is handed to its writer."""
        observed_ns = self._gate.engage_halt()
        self.observed_tick = tick
        self.state = HaltState(
            engaged=True, since=utcnow_iso(), reason=reason or f"halt requested in {source}",
            cancelled_orders=[], cancel_failed=[], cancels_pending=True, observed_ns=observed_ns,
            observed_at_ns=self._gate.halt_observed_at_ns, command_id=command_id,
        )
        self._changes.status_urgent = True
        if record:
            self.record(source)

    def record(self, source: str) -> None:
        """The engaged halt into the ledger (durably: a restart stays halted), and the log."""
        self._ledger.meta_set(halt=self.state.as_dict())
        log.critical("HALT engaged (%s): %s; cancelling resting orders", source, self.state.reason)

    def release(self) -> dict[str, Any]:
        """The gate opens again; returns the halt that was released. The caller records it."""
        self._gate.release_halt()
        released = self.state.as_dict()
        self.state = HaltState()
        metrics.halt_released()
        # Applied by a release command: its id is on this line (kernel/log_setup.py, command_logging).
        log.warning("HALT released (engaged since %s: %s); the kernel stays paused until a resume",
                    released.get("since"), released.get("reason"), extra={"halt_id": released.get("command_id")})
        return released

    def start_cancels(self) -> bool:
        """Cancel resting orders on a thread of their own: a slow exchange must not hold
        the tick thread. True when they were done within the cancel wait (a fast broker),
        so that the halt reports its cancels before engaging returns."""
        t = threading.Thread(target=self._cancel_resting_orders, args=(self.state.since,),
                             name="halt-cancel", daemon=True)
        self.thread = t
        t.start()
        t.join(self._cancel_wait_s)
        return not t.is_alive()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout=timeout)

    def _cancel_resting_orders(self, since: str | None) -> None:
        with command_logging(self.state.command_id):  # the sweep's lines name the halt (kernel/log_setup.py)
            self._cancel_sweep(since)

    def _cancel_sweep(self, since: str | None) -> None:
        cancelled, failed = [], []
        # Orders that passed the gate just before the halt may still be on their way: the sweep
        # must see them at the broker, and the flush must hold their fills.
        if not self._gate.wait_settled(self._settle_timeout_s):
            failed.append({"client_order_id": None, "error": f"{self._gate.in_transit} order(s) that passed "
                           "before the halt had no broker answer within the cycle deadline"})
        try:
            for bo in self._broker.open_orders():
                try:
                    res = self._broker.cancel_order(bo.client_order_id)
                    if self._ledger.order(bo.client_order_id) is not None:
                        record_broker_order(ledger=self._ledger, client_order_id=bo.client_order_id, order=res)
                    cancelled.append(bo.client_order_id)
                except Exception as exc:  # noqa: BLE001 - report, keep cancelling the rest
                    failed.append({"client_order_id": bo.client_order_id, "error": str(exc)})
        except Exception as exc:  # noqa: BLE001
            failed.append({"client_order_id": None, "error": f"could not list open orders: {exc}"})
        state = self.state
        if not state.engaged or state.since != since:
            return  # released (or re-engaged) meanwhile: that halt reports for itself
        done = dataclasses.replace(state, cancelled_orders=cancelled, cancel_failed=failed, cancels_pending=False)
        self._ledger.meta_set(halt=done.as_dict())
        self._ledger.flush()
        # Reported done only once flushed: a reader of status.json may rely on the main file.
        self.state = dataclasses.replace(done, flushed_at=utcnow_iso())
        (log.critical if failed else log.warning)(
            "HALT: cancelled %d resting order(s)%s", len(cancelled),
            f"; {len(failed)} could not be cancelled: {failed}" if failed else "")
        self._changes.status_urgent = True
