"""The ledger's record of limit orders: their price, time in force and expiry.

A limit order is an ordinary ledger order (intent before send, one fill per ledger
transaction, kernel.order_sync) plus one row here, written before it is sent, so a restart
(even after ``kill -9``) knows which open orders rest and until when. The order's status
(``open`` while it rests) stays in ``orders``; this table never changes after the insert.
"""
from __future__ import annotations

from typing import Any

__all__ = ["RESTING_SCHEMA", "record_limit", "limit_of", "resting_orders", "resting_by_slot"]

RESTING_SCHEMA = """
CREATE TABLE IF NOT EXISTS limit_orders (
    client_order_id TEXT PRIMARY KEY,
    limit_price REAL NOT NULL,
    time_in_force TEXT NOT NULL,      -- GTC | IOC
    expires_ms INTEGER,               -- cancelled once the clock reaches it; null: never
    timeframe TEXT                    -- the slot's timeframe: which candles may fill it (paper)
);
"""


def record_limit(ledger: Any, *, client_order_id: str, limit_price: float, time_in_force: str,
                 expires_ms: int | None, timeframe: str | None) -> None:
    """Durably, before the order is sent (its intent is recorded already)."""
    with ledger._tx() as db:
        db.execute("INSERT OR IGNORE INTO limit_orders(client_order_id, limit_price, time_in_force, expires_ms,"
                   " timeframe) VALUES(?,?,?,?,?)",
                   (client_order_id, limit_price, time_in_force, expires_ms, timeframe))


def limit_of(ledger: Any, client_order_id: str) -> dict | None:
    with ledger._lock:
        row = ledger._db.execute("SELECT * FROM limit_orders WHERE client_order_id=?",
                                 (client_order_id,)).fetchone()
    return dict(row) if row else None


def resting_orders(ledger: Any, slot: str | None = None) -> list[dict]:
    """Limit orders sent and not final (``sent`` or ``open``), oldest first, with their limit rows."""
    sql = ("SELECT o.*, l.limit_price, l.time_in_force, l.expires_ms, l.timeframe FROM orders o"
           " JOIN limit_orders l ON l.client_order_id = o.client_order_id WHERE o.status IN ('sent', 'open')")
    args: tuple = ()
    if slot is not None:
        sql += " AND o.slot = ?"
        args = (slot,)
    with ledger._lock:
        rows = ledger._db.execute(sql + " ORDER BY o.created_ms, o.client_order_id", args).fetchall()
    return [dict(r) for r in rows]


def resting_by_slot(ledger: Any) -> dict[str, list[dict]]:
    """Each slot's resting limit orders, as status.json reports them."""
    out: dict[str, list[dict]] = {}
    for r in resting_orders(ledger):
        out.setdefault(r["slot"], []).append({
            "client_order_id": r["client_order_id"], "intent": r["intent"], "side": r["side"], "qty": r["qty"],
            "limit_price": r["limit_price"], "filled_qty": r["filled_qty"], "time_in_force": r["time_in_force"],
            "expires_ms": r["expires_ms"], "status": r["status"]})
    return out
