"""The ledger's tables: orders (intent before send), fills, positions, cycles, applied
commands, slots and meta. Every statement is idempotent (IF NOT EXISTS): the ledger runs it
on each open, then :func:`migrate`.

How the schema evolves: a new table is a new ``CREATE TABLE IF NOT EXISTS``; a new column goes
into its table's CREATE below *and* into :data:`COLUMNS_ADDED` with the version that added it,
so that :func:`migrate` adds it (``ALTER TABLE ... ADD COLUMN``) to a ledger written before.
``meta.schema_version`` records the version a ledger is at."""
from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 2

# (version, table, column, declaration): columns added to an existing schema, oldest first.
COLUMNS_ADDED: tuple[tuple[int, str, str, str], ...] = (
    (2, "fills", "round_trip_pnl", "REAL"),
    (2, "fills", "fee_currency", "TEXT"),
    (2, "fills", "fee_rate_used", "REAL"),
    (2, "fills", "fee_native", "REAL"),
    (2, "orders", "trades_pending", "INTEGER NOT NULL DEFAULT 0"),
    (2, "positions", "dust_qty", "REAL NOT NULL DEFAULT 0"),
    (2, "positions", "dust_cost", "REAL NOT NULL DEFAULT 0"),
    (2, "positions", "unsellable", "TEXT"),
)


def migrate(db: sqlite3.Connection) -> int:
    """Bring a ledger to :data:`SCHEMA_VERSION` (in one transaction); returns the version it was at."""
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    at = int(row[0]) if row else 1
    if at >= SCHEMA_VERSION:
        return at
    db.execute("BEGIN IMMEDIATE")
    try:
        for version, table, column, decl in COLUMNS_ADDED:
            have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            if version > at and column not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        db.execute("INSERT INTO meta(key, value) VALUES('schema_version', ?) "
                   "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return at


SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    slot TEXT NOT NULL,
    symbol TEXT NOT NULL,
    candle_ms INTEGER,
    intent TEXT NOT NULL,            -- entry | exit | flatten
    side TEXT NOT NULL,              -- buy | sell
    qty REAL NOT NULL,
    ref_price REAL,
    status TEXT NOT NULL,            -- intent | sent | open | filled | refused | rejected | cancelled | abandoned
    broker_order_id TEXT,
    filled_qty REAL NOT NULL DEFAULT 0,
    avg_price REAL,
    error TEXT,
    command_id TEXT,
    created_ms INTEGER NOT NULL,
    passed_ns INTEGER,               -- when the order gate let it through (monotonic_ns)
    updated_ms INTEGER NOT NULL,
    trades_pending INTEGER NOT NULL DEFAULT 0  -- final at the broker, its trades (fills, fees) not known yet
);
CREATE INDEX IF NOT EXISTS orders_slot ON orders(slot, created_ms);
CREATE INDEX IF NOT EXISTS orders_status ON orders(status);
CREATE TABLE IF NOT EXISTS fills (
    fill_id TEXT PRIMARY KEY,
    client_order_id TEXT NOT NULL,
    slot TEXT NOT NULL,
    side TEXT NOT NULL,
    qty REAL NOT NULL,
    price REAL NOT NULL,
    fee REAL NOT NULL,
    ts_ms INTEGER NOT NULL,
    pnl REAL,                        -- realized P&L of this fill (its own fee included); null for buys
    seq INTEGER,                     -- order of recording, for "fills since"
    round_trip_pnl REAL,             -- on the fill that closes a round trip: its P&L, entry and exit fees included
    fee_currency TEXT,               -- the currency the fee was paid in (null: the quote, before schema 2)
    fee_rate_used REAL,              -- quote per unit of fee_currency used to convert the fee (1 for the quote)
    fee_native REAL                  -- the fee in fee_currency, as the exchange charged it
);
CREATE INDEX IF NOT EXISTS fills_slot ON fills(slot, ts_ms);
CREATE TABLE IF NOT EXISTS positions (
    slot TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    qty REAL NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    realized_pnl REAL NOT NULL DEFAULT 0,
    fees REAL NOT NULL DEFAULT 0,
    trades INTEGER NOT NULL DEFAULT 0,
    wins INTEGER NOT NULL DEFAULT 0,
    round_start_pnl REAL NOT NULL DEFAULT 0,  -- realized P&L when the open round trip began
    dust_qty REAL NOT NULL DEFAULT 0,  -- left below the market's minimum: flat, reported on its own
    dust_cost REAL NOT NULL DEFAULT 0,
    unsellable TEXT                    -- why the position cannot be sold (below the market's minimum), or null
);
CREATE TABLE IF NOT EXISTS cycles (
    slot TEXT NOT NULL,
    candle_ms INTEGER NOT NULL,
    strategy TEXT NOT NULL,
    version INTEGER,
    sha256 TEXT,
    started_ms INTEGER,
    lag_ms INTEGER,
    lock_wait_us INTEGER,
    duration_us INTEGER,
    result TEXT NOT NULL,            -- hold | enter | exit | fault | abandoned | refused:<why> | ...
    reason TEXT,
    PRIMARY KEY (slot, candle_ms)
);
CREATE TABLE IF NOT EXISTS commands (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    action TEXT NOT NULL,
    slot TEXT,
    result TEXT NOT NULL,
    error TEXT,
    detail TEXT,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slots (
    id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    fault TEXT,
    strategy_state TEXT NOT NULL DEFAULT '{}',
    state_schema INTEGER,
    cycles INTEGER NOT NULL DEFAULT 0,
    missed_cycles INTEGER NOT NULL DEFAULT 0,
    late_cycles INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    last_cycle_ms INTEGER
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
