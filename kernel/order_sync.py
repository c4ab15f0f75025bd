"""Bring the ledger's record of one order to what the broker says about it.

Shared by the order path, the halt's cancel sweep and startup reconciliation: each
learns an order's fate from the broker and records it the same way.

An order final at the broker with something filled but no trades known (the exchange has
not published them yet) is recorded "final, trades pending" (``orders.trades_pending``):
nothing is booked from it until its trades, with their fees, are fetched
(:meth:`kernel.execution.Execution.resolve_pending_trades`). A final sell settles its
slot's round trip: a remainder below the market's minimum is dust (kernel.round_trips).
"""
from __future__ import annotations

from . import metrics
from .brokers import BrokerOrder
from .crash_points import crash_point
from .ledger import Ledger

__all__ = ["record_broker_order", "trades_pending"]


def trades_pending(order: BrokerOrder) -> bool:
    """Final with a filled quantity whose trades (fills, fees) the broker does not know yet."""
    return order.is_final and order.filled_qty > 0 and not order.fills


def record_broker_order(*, ledger: Ledger, client_order_id: str, order: BrokerOrder) -> int:
    """Record the fills the ledger lacks and the order's status; returns how many fills were new."""
    new = 0
    for f in order.fills:
        if ledger.record_fill(fill_id=f.fill_id, client_order_id=client_order_id, qty=f.qty, price=f.price,
                              fee=f.fee, ts_ms=f.ts_ms, fee_currency=f.charged_currency or f.fee_currency,
                              fee_rate_used=f.fee_rate_used, fee_native=f.charged_fee):
            new += 1
            crash_point("fill_recorded")
    metrics.fills_recorded(side=order.side, count=new)
    status = {"partially_filled": "open"}.get(order.status, order.status)
    pending = trades_pending(order)
    ledger.mark_order(client_order_id, status, broker_order_id=order.broker_order_id, trades_pending=pending)
    if order.is_final and not pending:
        ledger.settle_round_trip(client_order_id)
    return new
