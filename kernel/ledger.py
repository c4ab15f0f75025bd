"""The ledger: orders (intent before send), fills, positions, cycles, applied commands.

SQLite in WAL mode with ``synchronous=FULL``: a commit returns only once it is on disk,
so an intent recorded before an order is sent survives a ``kill -9`` at any point (intents
are group-committed: kernel.intent_batch, which says why the rest of an order's life may be
``synchronous=NORMAL``).
One connection guarded by a lock: the kernel writes from its tick thread and from
cycle workers.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .ledger_order_indexes import ORDER_INDEXES
from .ledger_resting import RESTING_SCHEMA
from .ledger_schema import SCHEMA, migrate
from .ledger_counters import CountedTx as _Tx, LedgerCounters
from .round_trips import Book, apply_fill, settle

LEDGER_FILE = "ledger.sqlite3"  # in the kernel's state dir

OPEN_STATUSES = ("intent", "sent", "open")


@dataclass(frozen=True, slots=True)
class Position:
    qty: float = 0.0
    entry_price: float | None = None
    realized_pnl: float = 0.0
    fees: float = 0.0
    trades: int = 0  # closed round trips (kernel.round_trips)
    wins: int = 0
    dust_qty: float = 0.0  # below the market's minimum: flat, not in entry_price
    unsellable: str | None = None  # why the position cannot be sold now, or None


@dataclass(slots=True)
class CycleRecord:
    slot: str
    candle_ms: int
    strategy: str
    version: int | None
    sha256: str | None
    started_ms: int | None
    lag_ms: int | None
    lock_wait_us: int | None
    duration_us: int | None
    result: str
    reason: str | None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Ledger:
    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        # (symbol, price) -> the quantity below which the market takes no order: a position left
        # below it is dust (kernel.round_trips). Set by the order path from its broker.
        self.dust_rule: Callable[[str, float], float] | None = None
        self.pending_writes: Callable[[], object] = lambda: None  # kernel.bookkeeping_writer's flush
        if read_only:
            # A reader beside a running kernel (the console): never creates, migrates or writes
            # the file, and gives up soon on a busy one (nothing is concluded from an absence).
            self._db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                isolation_level=None, timeout=2.0,
            )
            self._db.row_factory = sqlite3.Row
            return
        self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA + RESTING_SCHEMA + ORDER_INDEXES)  # + limit orders, the order path's indexes
        migrate(self._db)
        self.counters = LedgerCounters.loaded(self._db, self._position)  # status.json's ledger part, in memory

    def _dust(self, symbol: str, price: float) -> float:
        if self.dust_rule is None:
            return 0.0
        try:
            return float(self.dust_rule(symbol, price) or 0.0)
        except Exception:  # noqa: BLE001 - no market data: no dust rule
            return 0.0

    # ------------------------------------------------------------------ plumbing

    def _tx(self, durable: bool = True):
        return _Tx(self, durable)

    def close(self) -> None:
        with self._lock:
            try:
                if not self.read_only:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()

    def flush(self) -> None:
        """Everything committed is durable already (synchronous=FULL); also fold the WAL
        into the main file, so a copy of the database file alone is complete."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(FULL)")

    # ------------------------------------------------------------------ meta

    def meta_get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def meta_set(self, *, _durable: bool = True, **values: Any) -> None:
        with self._tx(_durable) as db:
            for key, value in values.items():
                db.execute(
                    "INSERT INTO meta(key, value) VALUES(?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key, json.dumps(value)),
                )

    # ------------------------------------------------------------------ orders

    def record_intent(
        self,
        *,
        client_order_id: str,
        slot: str,
        symbol: str,
        candle_ms: int | None,
        intent: str,
        side: str,
        qty: float,
        ref_price: float | None,
        command_id: str | None = None,
    ) -> bool:
        """Write the intent durably before the order is sent. False if that client id
        was already recorded (a retry, or a restart replaying a cycle): do not send."""
        now = _now_ms()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO orders(client_order_id, slot, symbol, candle_ms, intent, side,"
                " qty, ref_price, status, command_id, created_ms, updated_ms)"
                " VALUES(?,?,?,?,?,?,?,?,'intent',?,?,?)",
                (client_order_id, slot, symbol, candle_ms, intent, side, qty, ref_price,
                 command_id, now, now),
            )
            return cur.rowcount == 1

    def mark_order(
        self,
        client_order_id: str,
        status: str,
        *,
        broker_order_id: str | None = None,
        error: str | None = None,
        passed_ns: int | None = None,
        trades_pending: bool | None = None,
    ) -> None:
        """``trades_pending``: the order is final at the broker but its trades (fills, fees) are
        not known yet; looked up again until they are (None: unchanged)."""
        pending = None if trades_pending is None else int(trades_pending)
        with self._tx(durable=False) as db:  # after the intent: rebuilt from the broker if lost (module doc)
            db.execute(
                "UPDATE orders SET status=?, broker_order_id=COALESCE(?, broker_order_id),"
                " error=COALESCE(?, error), passed_ns=COALESCE(?, passed_ns),"
                " trades_pending=COALESCE(?, trades_pending), updated_ms=? WHERE client_order_id=?",
                (status, broker_order_id, error, passed_ns, pending, _now_ms(), client_order_id),
            )
            self.counters.note_order(db, client_order_id)

    def trades_pending(self) -> list[dict]:
        """Orders final at the broker whose trades are still to be fetched."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM orders WHERE trades_pending=1 ORDER BY created_ms, client_order_id").fetchall()
        return [dict(r) for r in rows]

    def record_fill(
        self,
        *,
        fill_id: str,
        client_order_id: str,
        qty: float,
        price: float,
        fee: float,
        ts_ms: int,
        fee_currency: str | None = None,
        fee_rate_used: float | None = None,
        fee_native: float | None = None,
    ) -> bool:
        """Record a fill once (by fill id) and move the slot's position in the same
        transaction. False if the fill was already recorded. ``fee`` is in the quote currency;
        a fee charged in another currency is recorded as charged (``fee_native`` in
        ``fee_currency``) with the rate that converted it (``fee_rate_used``, quote per unit)."""
        with self._tx(durable=False) as db:  # refetched from the broker if a power cut loses it (module doc)
            order = db.execute(
                "SELECT slot, symbol, side, qty, filled_qty, avg_price FROM orders"
                " WHERE client_order_id=?",
                (client_order_id,),
            ).fetchone()
            if order is None:
                raise KeyError(f"fill {fill_id} for unknown order {client_order_id}")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM fills").fetchone()[0]
            cur = db.execute(
                "INSERT OR IGNORE INTO fills(fill_id, client_order_id, slot, side, qty, price, fee, ts_ms, seq,"
                " fee_currency, fee_rate_used, fee_native) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                (fill_id, client_order_id, order["slot"], order["side"], qty, price, fee, ts_ms, seq,
                 fee_currency, 1.0 if fee_rate_used is None else fee_rate_used,
                 fee if fee_native is None else fee_native),
            )
            if cur.rowcount != 1:
                return False
            filled = order["filled_qty"] + qty
            prev_avg = order["avg_price"] or 0.0
            avg = (prev_avg * order["filled_qty"] + price * qty) / filled if filled else None
            status = "filled" if filled >= order["qty"] * (1 - 1e-9) else "open"
            db.execute(
                "UPDATE orders SET filled_qty=?, avg_price=?, status=?, updated_ms=?"
                " WHERE client_order_id=?",
                (filled, avg, status, _now_ms(), client_order_id),
            )
            pnl, round_pnl = self._apply_fill(db, order["slot"], order["symbol"], order["side"], qty, price, fee)
            db.execute("UPDATE fills SET pnl=?, round_trip_pnl=? WHERE fill_id=?", (pnl, round_pnl, fill_id))
            self.counters.note_fill(db, fill_id=fill_id, client_order_id=client_order_id, slot=order["slot"])
            return True

    @staticmethod
    def _apply_fill(db, slot: str, symbol: str, side: str, qty: float, price: float,
                    fee: float) -> tuple[float | None, float | None]:
        """Move the slot's position (kernel.round_trips); returns the fill's P&L (None for a
        buy) and the P&L of the round trip it closes (None unless it closes one)."""
        db.execute("INSERT OR IGNORE INTO positions(slot, symbol) VALUES(?, ?)", (slot, symbol))
        pos = db.execute("SELECT * FROM positions WHERE slot=?", (slot,)).fetchone()
        book, pnl, round_pnl = apply_fill(Book(**{k: pos[k] for k in Book.__slots__}), side=side, qty=qty,
                                          price=price, fee=fee)
        Ledger._put_book(db, slot, book)
        return pnl, round_pnl

    @staticmethod
    def _put_book(db, slot: str, book: Book) -> None:
        db.execute(
            "UPDATE positions SET qty=?, cost=?, realized_pnl=?, fees=?, trades=?, wins=?, round_start_pnl=?,"
            " dust_qty=?, dust_cost=? WHERE slot=?",
            (book.qty, book.cost, book.realized_pnl, book.fees, book.trades, book.wins, book.round_start_pnl,
             book.dust_qty, book.dust_cost, slot),
        )

    def settle_round_trip(self, client_order_id: str) -> float | None:
        """A sell order is final: if what its slot holds now is below the market's minimum
        (``dust_rule``), that is dust and the round trip is closed (kernel.round_trips.settle),
        its P&L written on the order's last fill. Returns that P&L, or None."""
        order = self.order(client_order_id)
        if order is None or order["side"] != "sell":
            return None
        price = order["avg_price"] or order["ref_price"] or 0.0
        dust = self._dust(order["symbol"], price)  # outside the lock: a broker may ask its exchange
        if dust <= 0:
            return None
        with self._tx() as db:
            pos = db.execute("SELECT * FROM positions WHERE slot=?", (order["slot"],)).fetchone()
            if pos is None:
                return None
            book, round_pnl = settle(Book(**{k: pos[k] for k in Book.__slots__}), dust)
            if round_pnl is None:
                return None
            self._put_book(db, order["slot"], book)
            db.execute("UPDATE fills SET round_trip_pnl=? WHERE fill_id=(SELECT fill_id FROM fills"
                       " WHERE client_order_id=? ORDER BY seq DESC LIMIT 1)", (round_pnl, client_order_id))
            self.counters.note_settled(db, client_order_id=client_order_id, slot=order["slot"])
            return round_pnl

    def mark_unsellable(self, slot: str, reason: str | None) -> bool:
        """Note why the slot's position cannot be sold (None: it can again). True when it became
        unsellable or sellable again (not when only the reason's figures moved)."""
        with self._tx() as db:
            row = db.execute("SELECT unsellable FROM positions WHERE slot=?", (slot,)).fetchone()
            if row is None or row[0] == reason:
                return False
            db.execute("UPDATE positions SET unsellable=? WHERE slot=?", (reason, slot))
            self.counters.note_position(db, slot)
            return (row[0] is None) != (reason is None)

    def order(self, client_order_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM orders WHERE client_order_id=?", (client_order_id,)
            ).fetchone()
        return dict(row) if row else None

    def orders(self, slot: str | None = None, statuses: Iterable[str] | None = None) -> list[dict]:
        sql = "SELECT * FROM orders"
        args: list[Any] = []
        where = []
        if slot is not None:
            where.append("slot=?")
            args.append(slot)
        if statuses is not None:
            statuses = list(statuses)
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_ms, client_order_id"
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    def unfinished_orders(self) -> list[dict]:
        return self.orders(statuses=OPEN_STATUSES)

    def fills(self, slot: str | None = None) -> list[dict]:
        with self._lock:
            if slot is None:
                rows = self._db.execute("SELECT * FROM fills ORDER BY ts_ms, fill_id").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM fills WHERE slot=? ORDER BY ts_ms, fill_id", (slot,)
                ).fetchall()
        return [dict(r) for r in rows]

    def recent_fills(self, limit: int = 200) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM fills ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return [dict(r) for r in reversed(rows)]

    # ------------------------------------------------------------------ positions

    def position(self, slot: str) -> Position:
        with self._lock:
            row = self._db.execute("SELECT * FROM positions WHERE slot=?", (slot,)).fetchone()
        return self._position(row)

    @staticmethod
    def _position(row) -> Position:
        if row is None:
            return Position()
        qty = row["qty"]
        return Position(
            qty=qty,
            entry_price=(row["cost"] / qty) if qty > 1e-12 else None,
            realized_pnl=row["realized_pnl"],
            fees=row["fees"],
            trades=row["trades"],
            wins=row["wins"],
            dust_qty=row["dust_qty"],
            unsellable=row["unsellable"],
        )

    def positions(self) -> dict[str, Position]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM positions").fetchall()
        return {r["slot"]: self._position(r) for r in rows}

    # ------------------------------------------------------------------ cycles

    def record_cycles(self, records: list[CycleRecord]) -> int:
        """Batch insert; a (slot, candle) already recorded is kept, never doubled.
        Returns how many were new."""
        if not records:
            return 0
        with self._tx() as db:
            return self._insert_cycles(db, records)

    def record_cycles_and_slots(self, records: list[CycleRecord], slots: list[dict]) -> int:
        """Cycles and the slot rows that count them, in one transaction: a kill -9 between
        the two must not leave a slot's counters (cycles, last_cycle_ms) behind its cycles."""
        if not records and not slots:
            return 0
        # synchronous=NORMAL for this bookkeeping: in WAL mode it survives a kill -9 (the
        # commit is in the OS's hands); only a power cut could lose the last batch, and a
        # cycle replayed then cannot double an order (client order ids). Orders stay FULL.
        with self._tx(durable=False) as db:
            new = self._insert_cycles(db, records) if records else 0
            if slots:
                self._upsert_slots(db, slots)
            return new

    @staticmethod
    def _insert_cycles(db: sqlite3.Connection, records: list[CycleRecord]) -> int:
        before = db.total_changes
        db.executemany(
            "INSERT OR IGNORE INTO cycles(slot, candle_ms, strategy, version, sha256, started_ms,"
            " lag_ms, lock_wait_us, duration_us, result, reason) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            [
                (r.slot, r.candle_ms, r.strategy, r.version, r.sha256, r.started_ms, r.lag_ms,
                 r.lock_wait_us, r.duration_us, r.result, r.reason)
                for r in records
            ],
        )
        return db.total_changes - before

    def last_candles(self) -> dict[str, int]:
        """The latest candle each slot has a recorded cycle for."""
        self.pending_writes()
        with self._lock:
            rows = self._db.execute("SELECT slot, MAX(candle_ms) FROM cycles GROUP BY slot").fetchall()
        return {r[0]: r[1] for r in rows}

    def cycles(self, slot: str | None = None) -> list[dict]:
        self.pending_writes()
        with self._lock:
            if slot is None:
                rows = self._db.execute("SELECT * FROM cycles ORDER BY candle_ms, slot").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM cycles WHERE slot=? ORDER BY candle_ms", (slot,)
                ).fetchall()
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ commands

    def applied_command_ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM commands")}

    def record_command(
        self,
        *,
        id: str,
        action: str,
        slot: str | None,
        result: str,
        error: str | None,
        at: str,
        detail: dict | None = None,
        meta: dict[str, Any] | None = None,
        slots: list[dict] | None = None,
        cycles: list[CycleRecord] | None = None,
    ) -> bool:
        """Remember a command's result and, in the same transaction, the kernel state it
        changed (``meta``, the slot rows in ``slots``, and the ``cycles`` those rows count),
        so that a command remembered as applied never lost its effect. False if that id was
        already recorded: then its result and ``meta`` are not written (``slots`` and
        ``cycles``, the kernel's current state, are)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO commands(id, action, slot, result, error, detail, at)"
                " VALUES(?,?,?,?,?,?,?)",
                (id, action, slot, result, error, json.dumps(detail) if detail else None, at),
            )
            new = cur.rowcount == 1
            if new:
                for key, value in (meta or {}).items():
                    db.execute(
                        "INSERT INTO meta(key, value) VALUES(?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, json.dumps(value)),
                    )
            if cycles:
                self._insert_cycles(db, cycles)
            if slots:
                self._upsert_slots(db, slots)
            return new

    def command_result(self, command_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM commands WHERE id=?", (command_id,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        d["detail"] = json.loads(d["detail"]) if d["detail"] else None
        return d

    def command_results(self, ids: Iterable[str]) -> dict[str, dict]:
        """Results of the commands ``ids`` the ledger holds (id -> row), in chunks that stay
        under SQLite's bound-parameter limit."""
        ids = list(ids)
        out: dict[str, dict] = {}
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows = self._db.execute(
                    "SELECT id, action, slot, result, error, detail, at FROM commands "
                    f"WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                for row in rows:
                    d = dict(row)
                    d["detail"] = json.loads(d["detail"]) if d["detail"] else None
                    out[d["id"]] = d
        return out

    def recent_commands(self, limit: int = 200) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM commands ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        out = []
        for r in reversed(rows):
            d = dict(r)
            d["detail"] = json.loads(d["detail"]) if d["detail"] else None
            out.append(d)
        return out

    # ------------------------------------------------------------------ slots

    def save_slot(
        self,
        *,
        id: str,
        config: dict,
        paused: bool,
        fault: str | None,
        strategy_state: dict,
        state_schema: int | None,
        cycles: int,
        missed_cycles: int,
        late_cycles: int,
        errors: int,
        last_cycle_ms: int | None,
    ) -> None:
        self.save_slots([locals()])

    def add_slots(self, configs: list[dict]) -> None:
        """New slots (their configs, kernel.protocol.SlotConfig as JSON) with fresh counters,
        as a kernel finds them at its next start."""
        self.save_slots([
            {"id": c["id"], "config": c, "paused": False, "fault": None, "strategy_state": {},
             "state_schema": None, "cycles": 0, "missed_cycles": 0, "late_cycles": 0, "errors": 0,
             "last_cycle_ms": None}
            for c in configs
        ])

    def save_slots(self, slots: list[dict]) -> None:
        if not slots:
            return
        with self._tx() as db:
            self._upsert_slots(db, slots)

    @staticmethod
    def _upsert_slots(db: sqlite3.Connection, slots: list[dict]) -> None:
        db.executemany(
            "INSERT INTO slots(id, config, paused, fault, strategy_state, state_schema, cycles,"
            " missed_cycles, late_cycles, errors, last_cycle_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET config=excluded.config, paused=excluded.paused,"
            " fault=excluded.fault, strategy_state=excluded.strategy_state,"
            " state_schema=excluded.state_schema, cycles=excluded.cycles,"
            " missed_cycles=excluded.missed_cycles, late_cycles=excluded.late_cycles,"
            " errors=excluded.errors, last_cycle_ms=excluded.last_cycle_ms",
            [
                (s["id"], json.dumps(s["config"]), int(bool(s["paused"])), s["fault"],
                 json.dumps(s["strategy_state"]), s["state_schema"], s["cycles"],
                 s["missed_cycles"], s["late_cycles"], s["errors"], s["last_cycle_ms"])
                for s in slots
            ],
        )

    def load_slots(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM slots ORDER BY rowid").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["config"] = json.loads(d["config"])
            d["strategy_state"] = json.loads(d["strategy_state"])
            d["paused"] = bool(d["paused"])
            out.append(d)
        return out

    # ------------------------------------------------------------------ summary

    def summary(self) -> dict[str, Any]:
        with self._lock:
            db = self._db
            orders = db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
            open_orders = db.execute(
                f"SELECT COUNT(*) FROM orders WHERE status IN ({','.join('?' * len(OPEN_STATUSES))})",
                OPEN_STATUSES,
            ).fetchone()[0]
            fills = db.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
            realized, fees, trades, wins = db.execute(
                "SELECT COALESCE(SUM(realized_pnl), 0), COALESCE(SUM(fees), 0), COALESCE(SUM(trades), 0),"
                " COALESCE(SUM(wins), 0) FROM positions"
            ).fetchone()
            pending = db.execute("SELECT COUNT(*) FROM orders WHERE trades_pending=1").fetchone()[0]
        return {
            "orders": orders,
            "open_orders": open_orders,
            "fills": fills,
            "realized_pnl": round(realized, 8),
            "fees": round(fees, 8),
            "trades": trades,  # closed round trips (kernel.round_trips), all slots
            "wins": wins,
            "trades_pending": pending,  # orders final at the broker whose trades are still fetched
        }

