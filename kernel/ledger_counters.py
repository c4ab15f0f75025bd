"""The ledger's part of status.json, kept in memory: read once when the ledger opens, then
moved by the transactions that book an order or a fill.

status.json is built on the tick thread, and a halt's status must not wait on SQLite: the
summary, the recent fills, each slot's book and its resting limit orders are answered from
here without a query. They are kept current by :class:`CountedTx`, the ledger's transaction:
a write method of the ledger notes, inside its transaction, which order / fill / position it
touched (a point read by primary key, on the writing thread: a worker, the resting-order
poller, the halt sweep), and every transaction notes the orders inserted in it whatever wrote
them (a rowid range read: intents are group-committed by kernel.intent_batch). The notes are
applied once the transaction has committed, still under the ledger's lock, so a rolled-back
transaction changes nothing here and two writers apply in commit order.
"""
from __future__ import annotations

import sqlite3
import threading
from collections import deque
from typing import Any, Callable

from .ledger_tx import Tx

__all__ = ["CountedTx", "LedgerCounters", "RECENT_FILLS"]

RECENT_FILLS = 200  # status.json's ``fills``
OPEN_STATUSES = ("intent", "sent", "open")  # kernel.ledger.OPEN_STATUSES (not imported: no cycle)
RESTING_STATUSES = ("sent", "open")  # kernel.ledger_resting.resting_orders

_ORDER_SQL = ("SELECT o.client_order_id, o.slot, o.intent, o.side, o.qty, o.filled_qty, o.status,"
              " o.trades_pending, o.created_ms, l.limit_price, l.time_in_force, l.expires_ms"
              " FROM orders o LEFT JOIN limit_orders l ON l.client_order_id = o.client_order_id")


class LedgerCounters:
    """``position_of`` turns a positions row into the ledger's Position (Ledger._position)."""

    def __init__(self, position_of: Callable[[Any], Any]) -> None:
        self._position_of = position_of
        self._lock = threading.Lock()  # readers (the tick thread) copy under it; writers apply under it
        self.orders = 0
        self.fills = 0
        self._open: set[str] = set()
        self._pending: set[str] = set()  # trades_pending=1
        self._resting: dict[str, dict] = {}  # client_order_id -> the order's entry, with slot and created_ms
        self._recent: deque[dict] = deque(maxlen=RECENT_FILLS)
        self._rows: dict[str, Any] = {}  # slot -> positions row (sqlite3.Row): the sums, in rowid order
        self._books: dict[str, Any] = {}  # slot -> Position
        self._notes: list[Callable[[], None]] = []  # of the open transaction, applied after its commit
        self._last_rowid = 0  # the newest order counted (orders are never deleted)

    # ------------------------------------------------------------ boot: one read of the ledger

    @classmethod
    def loaded(cls, db: sqlite3.Connection, position_of: Callable[[Any], Any]) -> LedgerCounters:
        counters = cls(position_of)
        counters.load(db)
        return counters

    def load(self, db: sqlite3.Connection) -> None:
        self.orders, self._last_rowid = db.execute("SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM orders").fetchone()
        self.fills = db.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
        for row in db.execute(_ORDER_SQL + " WHERE o.status IN (?,?,?) OR o.trades_pending=1", OPEN_STATUSES):
            self._order_seen(row)
        rows = db.execute("SELECT * FROM fills ORDER BY seq DESC LIMIT ?", (RECENT_FILLS,)).fetchall()
        self._recent.extend(dict(r) for r in reversed(rows))
        for row in db.execute("SELECT * FROM positions ORDER BY rowid"):
            self._rows[row["slot"]] = row
            self._books[row["slot"]] = self._position_of(row)

    # ------------------------------------------------------------ notes (inside a ledger transaction)

    def note_new_orders(self, db: sqlite3.Connection) -> None:
        """The orders this transaction inserted (any writer): counted, open, maybe resting."""
        rows = db.execute(_ORDER_SQL.replace("SELECT ", "SELECT o.rowid AS _rowid, ", 1)
                          + " WHERE o.rowid > ? ORDER BY o.rowid", (self._last_rowid,)).fetchall()
        if rows:
            self._notes.append(lambda: self._orders_added(rows))

    def note_order(self, db: sqlite3.Connection, client_order_id: str) -> None:
        """An order changed (its status, its filled quantity, trades pending)."""
        row = db.execute(_ORDER_SQL + " WHERE o.client_order_id=?", (client_order_id,)).fetchone()
        if row is not None:
            self._notes.append(lambda: self._order_seen(row))

    def note_fill(self, db: sqlite3.Connection, *, fill_id: str, client_order_id: str, slot: str) -> None:
        """A new fill: its row, its order's new status, its slot's book."""
        fill = dict(db.execute("SELECT * FROM fills WHERE fill_id=?", (fill_id,)).fetchone())
        self._notes.append(lambda: self._fill_added(fill))
        self.note_order(db, client_order_id)
        self.note_position(db, slot)

    def note_settled(self, db: sqlite3.Connection, *, client_order_id: str, slot: str) -> None:
        """A round trip closed on dust: the order's last fill has its round-trip P&L now."""
        row = db.execute("SELECT * FROM fills WHERE client_order_id=? ORDER BY seq DESC LIMIT 1",
                         (client_order_id,)).fetchone()
        if row is not None:
            fill = dict(row)
            self._notes.append(lambda: self._fill_changed(fill))
        self.note_position(db, slot)

    def note_position(self, db: sqlite3.Connection, slot: str) -> None:
        row = db.execute("SELECT * FROM positions WHERE slot=?", (slot,)).fetchone()
        if row is not None:
            book = self._position_of(row)
            self._notes.append(lambda: self._position_seen(row, book))

    def committed(self) -> None:
        notes, self._notes = self._notes, []
        if notes:
            with self._lock:
                for apply in notes:
                    apply()

    def rolled_back(self) -> None:
        self._notes = []

    # ------------------------------------------------------------ applying (under self._lock)

    def _orders_added(self, rows: list[Any]) -> None:
        for row in rows:
            if row["_rowid"] > self._last_rowid:  # never counted twice
                self.orders += 1
                self._last_rowid = row["_rowid"]
                self._order_seen(row)

    def _order_seen(self, row: Any) -> None:
        coid, status = row["client_order_id"], row["status"]
        (self._open.add if status in OPEN_STATUSES else self._open.discard)(coid)
        (self._pending.add if row["trades_pending"] else self._pending.discard)(coid)
        if status in RESTING_STATUSES and row["limit_price"] is not None:
            self._resting[coid] = {
                "client_order_id": coid, "intent": row["intent"], "side": row["side"], "qty": row["qty"],
                "limit_price": row["limit_price"], "filled_qty": row["filled_qty"],
                "time_in_force": row["time_in_force"], "expires_ms": row["expires_ms"], "status": status,
                "_slot": row["slot"], "_order": (row["created_ms"], coid)}
        else:
            self._resting.pop(coid, None)

    def _fill_added(self, fill: dict) -> None:
        self.fills += 1
        self._recent.append(fill)

    def _fill_changed(self, fill: dict) -> None:
        for i, f in enumerate(self._recent):
            if f["fill_id"] == fill["fill_id"]:
                self._recent[i] = fill
                return

    def _position_seen(self, row: Any, book: Any) -> None:
        self._rows[row["slot"]] = row
        self._books[row["slot"]] = book

    # ------------------------------------------------------------ reads (any thread, no SQL)

    def summary(self) -> dict[str, Any]:
        """As Ledger.summary() returns it, key for key."""
        with self._lock:
            rows = list(self._rows.values())
            out = {"orders": self.orders, "open_orders": len(self._open), "fills": self.fills}
            pending = len(self._pending)
        # Summed in rowid order, as SQLite's SUM does: the same float to the last bit.
        realized = fees = 0.0
        trades = wins = 0
        for r in rows:
            realized += r["realized_pnl"]
            fees += r["fees"]
            trades += r["trades"]
            wins += r["wins"]
        out.update(realized_pnl=round(realized, 8), fees=round(fees, 8), trades=trades, wins=wins,
                   trades_pending=pending)
        return out

    def recent_fills(self) -> list[dict]:
        with self._lock:
            return [dict(f) for f in self._recent]

    def positions(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._books)

    def has_resting(self, slot: str | None = None) -> bool:
        """Any limit order resting (of ``slot``)? In memory: a cycle asks it before each decision."""
        with self._lock:
            return any(slot is None or e["_slot"] == slot for e in self._resting.values())

    def resting_by_slot(self) -> dict[str, list[dict]]:
        """As kernel.ledger_resting.resting_by_slot returns it (oldest first per slot)."""
        with self._lock:
            entries = sorted(self._resting.values(), key=lambda e: e["_order"])
        out: dict[str, list[dict]] = {}
        for e in entries:
            out.setdefault(e["_slot"], []).append({k: v for k, v in e.items() if not k.startswith("_")})
        return out


class CountedTx(Tx):
    """The ledger's transaction; once it has committed, the counters' notes of it are applied
    before the ledger's lock is let go (in commit order); a rollback drops them."""

    def __exit__(self, exc_type, exc, tb) -> None:
        counters: LedgerCounters | None = getattr(self.ledger, "counters", None)
        if counters is None:  # a read-only ledger, or one still opening
            return super().__exit__(exc_type, exc, tb)
        lock = self.ledger._lock
        lock.acquire()  # held across the commit and the apply (re-entrant)
        try:
            if exc_type is None:
                try:
                    counters.note_new_orders(self.ledger._db)
                except BaseException as noted:
                    counters.rolled_back()
                    super().__exit__(type(noted), noted, noted.__traceback__)
                    raise
            try:
                super().__exit__(exc_type, exc, tb)
            except BaseException:
                counters.rolled_back()
                raise
            if exc_type is None:
                counters.committed()
            else:
                counters.rolled_back()
        finally:
            lock.release()
