"""Indexes for the lookups the order path makes before every order.

``Ledger.trades_pending`` (asked by ``PendingTrades.before_order`` before each order, and by
the background lookups) selects the few orders final at the broker whose trades are not
known yet. Without an index that is a scan of every order ever recorded, per order: at a few
thousand trading slots the ledger holds tens of thousands of orders within hours. A partial
index holds only those rows (usually none), in the query's own order.

Created with ``IF NOT EXISTS`` when the ledger opens: an index changes no row, so a ledger
of any schema version gets it without a migration, and an older kernel ignores it.
"""
from __future__ import annotations

__all__ = ["ORDER_INDEXES"]

ORDER_INDEXES = """
CREATE INDEX IF NOT EXISTS orders_trades_pending ON orders(created_ms, client_order_id)
    WHERE trades_pending = 1;
"""
