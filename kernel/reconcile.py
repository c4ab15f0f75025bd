"""Startup reconciliation: before any slot trades, the ledger is brought to what the broker says.

Every unfinished order of the ledger (intent, sent, open), and every order final with its
trades still pending, is looked up at the broker by its client id: fills the ledger lacks
are recorded, final states marked, orders the broker never saw abandoned. Orders the
broker holds open that the ledger does not know are reported, and so are positions the
account does not hold (never acted on: they may be a human's). An order whose fate the
broker cannot tell (unreachable, keys refused) pauses its slot: it must not trade on a
position that may be wrong.
"""
from __future__ import annotations

import logging
from typing import Any

from .brokers import Broker
from .changes import Changes
from .errors import AuthenticationFailed, KernelError, TemporaryError
from .ledger import Ledger
from .order_sync import record_broker_order
from .protocol import utcnow_iso
from .slot_runtime import EPS, SlotRuntime

__all__ = ["reconcile", "reconcile_summary"]

log = logging.getLogger("kernel")


def reconcile(*, ledger: Ledger, broker: Broker, slots: dict[str, SlotRuntime], changes: Changes) -> dict[str, Any]:
    """What reconciliation found (status.json's ``ledger.reconciled``)."""
    found: dict[str, Any] = {
        "checked": 0, "filled": 0, "open": 0, "cancelled": 0, "rejected": 0, "never_sent": 0,
        "unknown": 0, "fills_recorded": 0, "unknown_open_orders": 0, "orders": [],
        "broker_only_orders": [], "position_mismatches": [], "errors": [],
    }
    unreachable: str | None = None  # after one "broker unreachable", do not wait on each order
    pending = [o for o in ledger.trades_pending() if o["status"] not in ("intent", "sent", "open")]
    for order in ledger.unfinished_orders() + pending:
        cid = order["client_order_id"]
        found["checked"] += 1
        entry = {"client_order_id": cid, "slot": order["slot"], "symbol": order["symbol"],
                 "intent": order["intent"], "side": order["side"], "qty": order["qty"],
                 "ledger_status": order["status"]}
        error, bo = unreachable, None
        if error is None:
            try:
                bo = broker.fetch_order(cid)
            except (TemporaryError, AuthenticationFailed) as exc:
                error = unreachable = f"{type(exc).__name__}: {exc}"
            except KernelError as exc:
                error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            found["unknown"] += 1
            found["orders"].append({**entry, "result": "unknown", "error": error})
            slot = slots.get(order["slot"])
            if slot is not None:
                slot.fault = (f"order {cid} could not be reconciled at startup ({error}): "
                              "check it at the exchange, then resume the slot")
                changes.mark_slot(slot.id)
            continue
        if bo is None:
            ledger.mark_order(cid, "abandoned", error="never reached the broker (found at startup)")
            found["never_sent"] += 1
            found["orders"].append({**entry, "result": "never_sent"})
            continue
        new_fills = record_broker_order(ledger=ledger, client_order_id=cid, order=bo)
        found["fills_recorded"] += new_fills
        key = bo.status if bo.status in ("filled", "cancelled", "rejected") else "open"
        found[key] += 1
        found["orders"].append({**entry, "result": bo.status, "filled_qty": bo.filled_qty,
                                "fills_recorded": new_fills})
    if unreachable is None:
        _broker_view(found, ledger=ledger, broker=broker, slots=slots)
    else:
        found["errors"].append(f"broker unreachable: {unreachable}")
    for slot_id, pos in ledger.positions().items():
        if slot_id in slots:
            slots[slot_id].take_position(pos)
    found["at"] = utcnow_iso()
    found["orders"] = found["orders"][:50]
    found["summary"] = reconcile_summary(found)
    changes.status_urgent = True
    if found["checked"] or found["unknown_open_orders"] or found["position_mismatches"] or found["errors"]:
        (log.error if (found["unknown"] or found["unknown_open_orders"] or found["position_mismatches"])
         else log.warning)("reconciled at startup: %s", found["summary"])
    return found


def _broker_view(found: dict[str, Any], *, ledger: Ledger, broker: Broker, slots: dict[str, SlotRuntime]) -> None:
    """Open orders at the broker that the ledger does not know, and positions the
    account does not hold: reported (never acted on: they may be a human's)."""
    try:
        open_orders = broker.open_orders()
    except KernelError as exc:
        found["errors"].append(f"could not list the broker's open orders: {type(exc).__name__}: {exc}")
        open_orders = []
    for bo in open_orders:
        if ledger.order(bo.client_order_id) is None:
            found["unknown_open_orders"] += 1
            if len(found["broker_only_orders"]) < 50:
                found["broker_only_orders"].append({
                    "client_order_id": bo.client_order_id, "broker_order_id": bo.broker_order_id,
                    "symbol": bo.symbol, "side": bo.side, "type": bo.type, "qty": bo.qty,
                    "limit_price": bo.limit_price, "status": bo.status,
                })
    held: dict[str, float] = {}
    for slot_id, pos in ledger.positions().items():
        symbol = (slots[slot_id].config.symbol if slot_id in slots
                  else (ledger.orders(slot=slot_id) or [{}])[-1].get("symbol"))
        if symbol and pos.qty > EPS:
            base = symbol.split("/")[0]
            held[base] = held.get(base, 0.0) + pos.qty
    if not held:
        return
    try:
        balances = broker.balances()
    except KernelError as exc:
        found["errors"].append(f"could not read the broker's balances: {type(exc).__name__}: {exc}")
        return
    for base, qty in sorted(held.items()):
        have = balances.get(base, 0.0)
        if have < qty * (1 - 1e-9) - EPS:  # the ledger holds more than the account: exits would fail
            found["position_mismatches"].append({"currency": base, "ledger": qty, "broker": have})


def reconcile_summary(found: dict[str, Any]) -> str:
    """One line for status.json and the audit trail: what startup reconciliation found."""
    parts = [f"{found['checked']} unfinished order(s) checked with the broker"]
    for key, label in (("filled", "filled"), ("open", "still open"), ("cancelled", "cancelled"),
                       ("rejected", "rejected"), ("never_sent", "never sent (abandoned)"),
                       ("unknown", "UNKNOWN (slot paused)")):
        if found.get(key):
            parts.append(f"{found[key]} {label}")
    parts.append(f"{found['fills_recorded']} missing fill(s) recorded")
    if found.get("unknown_open_orders"):
        parts.append(f"{found['unknown_open_orders']} open order(s) at the broker unknown to the ledger")
    if found.get("position_mismatches"):
        parts.append("ledger positions not held at the broker: " + ", ".join(
            f"{m['currency']} {m['ledger']:.8g} > {m['broker']:.8g}" for m in found["position_mismatches"]))
    parts.extend(found.get("errors") or [])
    return "; ".join(parts)
