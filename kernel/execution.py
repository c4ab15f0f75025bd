"""The order path: risk checks → intent in the ledger → the gate's final pass → broker → fills.

The one owner of orders whose outcome is unknown (the broker stayed unreachable through
its retries): such an order is looked up by its client id before its slot may send
another, since the slot's position depends on it. Orders final at the broker whose trades
are not known yet are looked up the same way, and in the background (kernel.pending_trades).

The market's minimums (amount, value) and amount step (``Broker.market_rules``) are checked
before an order is sent: its quantity is cut to the step, and one below a minimum is refused
with the reason in the ledger, never sent. A position that cannot be sold for that reason is
noted once (a log line, ``positions.unsellable``, status.json), not at every cycle.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

from .brokers import Broker, OrderRequest
from .changes import Changes
from .clock import Clock
from . import metrics
from .crash_points import crash_point
from .errors import AuthenticationFailed, GateRefused, KernelError, OrderRejected, TemporaryError
from .feeds.feed import timeframe_ms
from .gate import OrderGate
from .halt import HaltController
from .intent_batch import Intent, IntentBatch, Membership
from .ledger import Ledger
from .log_setup import command_logging
from .order_sync import record_broker_order, trades_pending
from .pending_trades import PendingTrades
from .protocol import SlotConfig
from .resting_orders import RestingOrders
from .run_state import RunState
from .slot_runtime import EPS, SlotRuntime
from .workers import Job

__all__ = ["Execution", "client_order_id"]

log = logging.getLogger("kernel")


def client_order_id(slot: str, key: str, intent: str) -> str:
    """Deterministic per slot, candle (or command) and intent: the same order always gets
    the same id, so neither a retry nor a restart can send it twice. 32 characters of
    [0-9a-f] after ``fs``: accepted by every exchange we know (Binance allows 36)."""
    digest = hashlib.blake2b(f"{slot}|{key}|{intent}".encode(), digest_size=15).hexdigest()
    return f"fs{digest}"


class Execution:
    def __init__(self, *, ledger: Ledger, broker: Broker, gate: OrderGate, clock: Clock, feed: Any,
                 run_state: RunState, halt: HaltController, changes: Changes, cycle_deadline_ms: int,
                 slots: dict[str, SlotRuntime] | None = None) -> None:
        self._ledger = ledger
        self._broker = broker
        self._gate = gate
        self._clock = clock
        self._feed = feed
        self._run = run_state
        self._halt = halt
        self._changes = changes
        self._deadline_ms = cycle_deadline_ms
        self._unresolved: dict[str, set[str]] = {}  # slot -> client ids whose outcome is unknown
        self._unresolved_lock = threading.Lock()
        # Intents of orders decided together share one commit (kernel.intent_batch).
        self.intents = IntentBatch(ledger)
        self.pending_trades = PendingTrades(ledger=ledger, broker=broker)
        slots = slots if slots is not None else {}
        self.resting = RestingOrders(ledger=ledger, broker=broker, clock=clock, feed=feed, changes=changes,
                                     slot_of=slots.get)
        ledger.dust_rule = self.dust_at

    def dust_at(self, symbol: str, price: float) -> float:
        """The largest quantity of ``symbol`` no order can be made of at ``price`` (a hair under
        the market's minimum: a quantity exactly at the minimum can still be sold)."""
        return self._broker.market_rules(symbol).dust_qty(price) * (1 - 1e-9)

    def entries_allowed(self, slot: SlotRuntime | None) -> bool:
        return not (self._run.paused or self._halt.engaged or slot is None or slot.paused or slot.fault)

    def unresolved(self, slot_id: str) -> set[str]:
        """This slot's orders whose outcome is still unknown (a copy)."""
        with self._unresolved_lock:
            return set(self._unresolved.get(slot_id, ()))

    def send(self, *, slot: SlotRuntime, cfg: SlotConfig, intent: str, side: str, qty: float, price: float,
             candle_ms: int | None, key: str, job: Job | None, command_id: str | None = None,
             limit: dict[str, Any] | None = None) -> dict:
        """One order, from the risk checks to its fills; returns its summary for the slot. ``limit``
        (``limit_price``, ``time_in_force``, ``expires_ms``) makes it a limit order, which may rest
        (kernel.resting_orders); ``price`` is then its limit price."""
        cid = client_order_id(cfg.id, key, intent)
        summary: dict[str, Any] = {"client_order_id": cid, "intent": intent, "side": side, "qty": qty}
        if limit is not None:
            summary["limit_price"] = limit["limit_price"]
        now_ms = self._clock.now_ms()
        try:
            if intent != "flatten":
                if self._gate.halted:
                    raise self._gate.refuse("halted", "halted: no strategy order passes the gate")
                # A cycle past its deadline goes on to the gate, which refuses it for that reason and
                # the ledger records it (its slot is paused by now too, but the deadline is why).
                past_deadline = job is not None and (job.abandoned or (
                    job.started_wall is not None
                    and (time.monotonic() - job.started_wall) * 1000 > self._deadline_ms))
                if intent == "entry" and not past_deadline and not self.entries_allowed(slot):
                    raise self._gate.refuse("paused", "entries are paused")
            self._gate.check_risk(
                slot=cfg.id, intent=intent, qty=qty, price=price, position_qty=slot.position_qty,
                max_position=cfg.max_position, max_notional=cfg.max_notional,
                max_orders_per_minute=cfg.max_orders_per_minute, now_ms=now_ms,
            )
        except GateRefused as exc:
            summary.update(status="refused", error=str(exc), reason=exc.reason)
            return summary
        waiting = self.pending_trades.before_order(slot)
        if waiting is not None:
            # An earlier order of this slot is final but its trades were not booked when its cycle decided.
            slot.take_position(self._ledger.position(cfg.id))
            summary.update(status="refused", reason=waiting,
                           error=("an earlier order's trades were just booked: the next cycle decides again"
                                  if waiting == "resolved" else "an earlier order is final but its trades (fills, "
                                  "fees) are not known yet: no new order until they are"))
            return summary
        if intent != "flatten":
            if self.resting.has_resting(cfg.id):  # the new order replaces it: cancelled first, its fills booked
                self.resting.cancel_slot(cfg.id)
            if self.resting.booked_since_poll(cfg.id):
                slot.take_position(self._ledger.position(cfg.id))
                summary.update(status="refused", reason="resolved", error=(
                    "a resting order of the slot filled after its cycle looked: the next cycle decides again"))
                return summary
        rules = self._broker.market_rules(cfg.symbol)
        qty = rules.round_qty(qty)
        summary["qty"] = qty
        refusal = rules.refusal(qty, price)
        if refusal is not None:
            return self._refuse_below_minimum(slot, cfg, cid, intent, side, qty, price, candle_ms, command_id,
                                              refusal, summary)
        if side == "sell":
            self._ledger.mark_unsellable(cfg.id, None)
        if self._unresolved.get(cfg.id):
            # An earlier order of this slot ended in doubt: its fate decides the position first.
            resolved = self._resolve_unknown_orders(slot)
            summary.update(status="refused", reason="unresolved" if not resolved else "resolved",
                           error=("an earlier order's outcome is still unknown: no new order until the "
                                  "broker answers" if not resolved else
                                  "an earlier order's outcome was just resolved: the next cycle decides again"))
            return summary
        member = self.intents.record(Intent(
            client_order_id=cid, slot=cfg.id, symbol=cfg.symbol, candle_ms=candle_ms, intent=intent,
            side=side, qty=qty, ref_price=price, command_id=command_id,
            limit=None if limit is None else {**limit, "timeframe": cfg.timeframe},
        ))
        if not member.inserted:
            summary.update(status="duplicate", error="this order was already recorded; not sent again")
            return summary
        try:
            return self._pass_and_place(slot, cfg, cid, intent, side, qty, price, now_ms, job, summary,
                                        limit=limit, candle_ms=candle_ms, member=member)
        finally:
            member.finished()  # placed, refused or in doubt: no longer part of a half-sent batch

    def _pass_and_place(self, slot: SlotRuntime, cfg: SlotConfig, cid: str, intent: str, side: str, qty: float,
                        price: float, now_ms: int, job: Job | None, summary: dict[str, Any], *,
                        limit: dict[str, Any] | None, candle_ms: int | None, member: Membership) -> dict:
        """An order whose intent is on disk: the gate's final pass, then the broker."""
        crash_point("intent_recorded")
        deadline_passed = False
        if job is not None and job.started_wall is not None:
            deadline_passed = (time.monotonic() - job.started_wall) * 1000 > self._deadline_ms
        try:
            passed_ns = self._gate.pass_order(
                slot=cfg.id, intent=intent, now_ms=now_ms,
                abandoned=bool(job and job.abandoned), deadline_passed=deadline_passed,
                entries_allowed=self.entries_allowed(slot),
            )
        except GateRefused as exc:
            self._ledger.mark_order(cid, "refused", error=str(exc))
            summary.update(status="refused", error=str(exc), reason=exc.reason)
            return summary
        try:
            return self._place_passed(slot, cfg, cid, side, qty, price, now_ms, passed_ns, summary,
                                      limit=limit, candle_ms=candle_ms, member=member)
        finally:
            self._gate.order_settled()  # recorded (or in doubt): a halt's flush need not wait for it

    def _place_passed(self, slot: SlotRuntime, cfg: SlotConfig, cid: str, side: str, qty: float,
                      price: float, now_ms: int, passed_ns: int, summary: dict[str, Any],
                      limit: dict[str, Any] | None = None, candle_ms: int | None = None,
                      member: Membership | None = None) -> dict:
        """An order the gate passed: marked sent, placed at the broker, its fills recorded."""
        self._ledger.mark_order(cid, "sent", passed_ns=passed_ns)
        crash_point("order_marked_sent")
        if limit is None:
            req = OrderRequest(client_order_id=cid, symbol=cfg.symbol, side=side, qty=qty)  # type: ignore[arg-type]
        else:  # placed "at" its signal candle's close: a simulated exchange fills it from the next candle on
            req = OrderRequest(client_order_id=cid, symbol=cfg.symbol, side=side, qty=qty,  # type: ignore[arg-type]
                               type="limit", limit_price=limit["limit_price"], time_in_force=limit["time_in_force"])
            now_ms = candle_ms if candle_ms is not None else now_ms
            price = limit.get("ref_price", price)
        if member is not None:
            member.sending()
        try:
            bo = self._broker.place_order(req, ref_price=price, now_ms=now_ms)
        except OrderRejected as exc:
            self._ledger.mark_order(cid, "rejected", error=str(exc))
            summary.update(status="rejected", error=str(exc))
            log.warning("slot %s: order %s rejected: %s", cfg.id, cid, exc)
            return summary
        except AuthenticationFailed as exc:
            self._ledger.mark_order(cid, "rejected", error=str(exc))
            slot.fault = f"broker authentication failed: {exc}: fix the keys, then resume the slot"
            self._changes.status_urgent = True
            log.error("slot %s paused: %s", cfg.id, slot.fault)
            summary.update(status="rejected", error=str(exc))
            return summary
        except TemporaryError as exc:
            # Left as "sent": looked up by its client id before this slot's next order, and at
            # the next start; until then the slot sends nothing (its position is in doubt).
            with self._unresolved_lock:
                self._unresolved.setdefault(cfg.id, set()).add(cid)
            log.error("slot %s: order %s outcome unknown after retries: %s", cfg.id, cid, exc)
            summary.update(status="unknown", error=str(exc))
            return summary
        if member is not None:
            member.placed()
        crash_point("order_placed")
        record_broker_order(ledger=self._ledger, client_order_id=cid, order=bo)
        if trades_pending(bo):
            self.pending_trades.watch(slot)
            summary["trades_pending"] = True
        slot.take_position(self._ledger.position(cfg.id))
        summary.update(status=bo.status, filled_qty=bo.filled_qty, avg_price=bo.avg_price)
        return summary

    def _refuse_below_minimum(self, slot: SlotRuntime, cfg: SlotConfig, cid: str, intent: str, side: str,
                              qty: float, price: float, candle_ms: int | None, command_id: str | None,
                              refusal: str, summary: dict[str, Any]) -> dict:
        """An order the market would refuse: recorded as refused (never sent). A position that
        cannot be sold is noted once: later attempts of the same say nothing new."""
        summary.update(status="refused", reason="market_minimum", error=refusal)
        if side == "sell":
            note = f"position {slot.position_qty:.10g} cannot be sold: {refusal}"
            if not self._ledger.mark_unsellable(cfg.id, note):
                return summary  # said already
            self._changes.status_urgent = True
            log.warning("slot %s: %s (said once; the position is left as it is)", cfg.id, note)
        else:
            log.warning("slot %s: %s order refused before sending: %s", cfg.id, intent, refusal)
        if self._ledger.record_intent(client_order_id=cid, slot=cfg.id, symbol=cfg.symbol, candle_ms=candle_ms,
                                      intent=intent, side=side, qty=qty, ref_price=price, command_id=command_id):
            self._ledger.mark_order(cid, "refused", error=refusal)
        return summary

    def _resolve_unknown_orders(self, slot: SlotRuntime) -> bool:
        """Look up this slot's orders whose outcome was unknown and record what the broker
        says. True once none is left in doubt."""
        with self._unresolved_lock:
            cids = sorted(self._unresolved.get(slot.id, ()))
        for cid in cids:
            try:
                bo = self._broker.fetch_order(cid)
            except KernelError as exc:
                log.warning("slot %s: order %s still unknown: %s", slot.id, cid, exc)
                return False
            if bo is None:
                self._ledger.mark_order(cid, "abandoned", error="never reached the broker")
            else:
                record_broker_order(ledger=self._ledger, client_order_id=cid, order=bo)
                if trades_pending(bo):
                    self.pending_trades.watch(slot)
            with self._unresolved_lock:
                self._unresolved.get(slot.id, set()).discard(cid)
            log.warning("slot %s: order %s resolved: %s", slot.id, cid, bo.status if bo else "never sent")
        slot.take_position(self._ledger.position(slot.id))
        return True

    @staticmethod
    def limit_of(decision: Any, *, timeframe: str, close_ms: int, close: float) -> dict[str, Any] | None:
        """The limit order a Decision asks for (None: a market order), its expiry in ms."""
        if getattr(decision, "limit_price", None) is None:
            return None
        expires_ms = decision.expire_at_ms
        if decision.expire_candles is not None:
            expires_ms = close_ms + decision.expire_candles * timeframe_ms(timeframe)
        return {"limit_price": float(decision.limit_price), "time_in_force": decision.time_in_force,
                "expires_ms": expires_ms, "ref_price": close}

    def flatten(self, slot: SlotRuntime, *, command_id: str) -> dict:
        """Sell the slot's whole position at the feed's last price (slot.flatten); its resting
        orders are cancelled first (what they filled up to then is sold too)."""
        with command_logging(command_id):  # on a cycle worker: its lines name the command too
            return self._flatten(slot, command_id=command_id)

    def _flatten(self, slot: SlotRuntime, *, command_id: str) -> dict:
        cancelled, _ = self.resting.cancel_slot(slot.id)
        self.resting.booked_since_poll(slot.id)  # the flatten sells what they bought: it reads the position below
        pos = self._ledger.position(slot.id)
        slot.take_position(pos)
        if pos.qty <= EPS:
            return {"note": "no position to flatten", "qty": 0.0, **({"resting_cancelled": cancelled} if cancelled else {})}
        price = self._feed.last_price(slot.config.symbol, self._clock.now_ms())
        res = self.send(slot=slot, cfg=slot.config, intent="flatten", side="sell", qty=pos.qty, price=price,
                        candle_ms=None, key=command_id, job=None, command_id=command_id)
        metrics.order_decided(intent="flatten", side="sell", status=res.get("status"))
        if res.get("status") not in ("filled", "open"):
            res["error"] = res.get("error") or f"flatten order {res.get('status')}"
        if cancelled:
            res["resting_cancelled"] = cancelled
        return res
