"""Bring the ledger's record of one order to what the broker says about it.

Shared by the order path, the halt's cancel sweep and startup reconciliation: each
learns an order's fate from the broker and records it the same way.
"""
from __future__ import annotations

from .brokers import BrokerOrder
from .crash_points import crash_point
from .ledger import Ledger

__all__ = ["record_broker_order"]


def record_broker_order(*, ledger: Ledger, client_order_id: str, order: BrokerOrder) -> int:
    """Record the fills the ledger lacks and the order's status; returns how many fills were new."""
    new = 0
    for f in order.fills:
        if ledger.record_fill(fill_id=f.fill_id, client_order_id=client_order_id, qty=f.qty, price=f.price,
                              fee=f.fee, ts_ms=f.ts_ms):
            new += 1
            crash_point("fill_recorded")
    status = {"partially_filled": "open"}.get(order.status, order.status)
    ledger.mark_order(client_order_id, status, broker_order_id=order.broker_order_id)
    return new
