"""The ledger's tables: orders (intent before send), fills, positions, cycles, applied
commands, slots and meta. Every statement is idempotent (IF NOT EXISTS): the ledger runs it
on each open."""

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
    updated_ms INTEGER NOT NULL
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
    pnl REAL,                        -- realized P&L of this fill (fees included); null for buys
    seq INTEGER                      -- order of recording, for "fills since"
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
    round_start_pnl REAL NOT NULL DEFAULT 0  -- realized P&L when the open round trip began
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
