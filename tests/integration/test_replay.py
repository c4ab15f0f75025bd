"""``runkernel --feed replay``: a strategy over history through the kernel's own code path,
at any speed, with the same orders and fills run after run."""
from __future__ import annotations

from pathlib import Path

import pytest

from kernel.feeds.replay import export_synthetic
from kernel.protocol import SlotConfig, ms_to_iso
from tests.support.kernel_process import KernelProcess
from tests.support.ledger_reader import sqlite_rows as rows
from tests.support.slot_seeds import seed_slots
from tests.support.status_reader import read_status
from tests.support.strategy_folders import write_strategies
from tests.support.strategy_sources import FLIPFLOP

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START_MS = 1_700_000_100_000 - 1_700_000_100_000 % 900_000
HOURS = 24
SLOTS = [
    SlotConfig(id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="flipflop"),
    SlotConfig(id="eth-15m", symbol="ETH/USDT", timeframe="15m", strategy="ema_cross",
               params={"fast": 5, "slow": 12}),
    SlotConfig(id="btc-15m", symbol="BTC/USDT", timeframe="15m", strategy="ema_cross",
               params={"fast": 3, "slow": 8}),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("replay-world")
    export_synthetic(root / "candles", ["BTC/USDT", "ETH/USDT"], ["5m", "15m"], START_MS,
                     START_MS + HOURS * 3_600_000, seed=7)
    return {
        "candles": root / "candles",
        "strategies": write_strategies(root / "strategies", {"flipflop": FLIPFLOP}, with_repo=["ema_cross"]),
    }


def _replay(state: Path, world: dict[str, Path], *args: str) -> None:
    seed_slots(state, SLOTS)
    kernel = KernelProcess(state, ["--feed", "replay", "--replay-dir", str(world["candles"]),
                                   "--strategies-dir", str(world["strategies"]), "--tick-ms", "5", *args])
    code = kernel.start(wait=False).wait_exit(timeout=120)  # a replay stops by itself at its last candle
    assert code == 0, (state / "kernel.log").read_text(errors="replace")[-3000:]


def _books(state: Path) -> dict[str, list]:
    db = state / "ledger.sqlite3"
    return {
        "orders": rows(db, "SELECT client_order_id, slot, candle_ms, intent, side, qty, ref_price, status,"
                           " filled_qty, avg_price, error FROM orders ORDER BY client_order_id"),
        # Fill ids are the paper exchange's (P<n>-F1): two slots at one close may reach it in either order.
        "fills": rows(db, "SELECT client_order_id, slot, side, qty, price, fee, ts_ms, pnl FROM fills"
                          " ORDER BY client_order_id"),
        "positions": rows(db, "SELECT * FROM positions ORDER BY slot"),
        "cycles": rows(db, "SELECT slot, candle_ms, strategy, version, sha256, result, reason FROM cycles"
                           " ORDER BY slot, candle_ms"),
    }


def test_two_replays_of_the_same_candles_give_the_same_ledger(tmp_path: Path, world) -> None:
    _replay(tmp_path / "a", world, "--speed", "inf")
    _replay(tmp_path / "b", world, "--speed", "inf")
    a, b = _books(tmp_path / "a"), _books(tmp_path / "b")
    assert len(a["orders"]) > 250 and len(a["fills"]) == len(a["orders"])
    assert {o["slot"] for o in a["orders"]} == {"btc-5m", "eth-15m", "btc-15m"}
    for table in ("orders", "fills", "positions", "cycles"):
        assert a[table] == b[table], f"{table} differ between two replays"


def test_a_replay_evaluates_every_candle_at_its_close_whatever_the_speed(tmp_path: Path, world) -> None:
    fast, capped = tmp_path / "fast", tmp_path / "capped"
    _replay(fast, world, "--speed", "inf")
    _replay(capped, world, "--speed", "300000")  # one simulated day in ~0.3 s of wall time, at most
    assert _books(fast) == _books(capped)

    cycles = _books(fast)["cycles"]
    btc5 = [c["candle_ms"] for c in cycles if c["slot"] == "btc-5m"]
    # The clock starts at the first candle: every close from the first one to the last, none missed.
    assert btc5 == list(range(START_MS + 300_000, START_MS + HOURS * 3_600_000 + 1, 300_000))
    fills = rows(fast / "ledger.sqlite3", "SELECT f.ts_ms, o.candle_ms FROM fills f JOIN orders o USING (client_order_id)")
    assert fills and all(f["ts_ms"] == f["candle_ms"] for f in fills), "orders fill at their candle's close"
    status = read_status(fast)
    assert status["state"] == "stopped" and status["cycles"]["missed"] == 0
    assert status["clock_at"] == ms_to_iso(START_MS + HOURS * 3_600_000)  # the last candle's close


def test_start_option_begins_the_replay_later(tmp_path: Path, world) -> None:
    state = tmp_path / "late"
    _replay(state, world, "--speed", "inf", "--start", "2023-11-15T10:00:00Z")
    first = rows(state / "ledger.sqlite3", "SELECT MIN(candle_ms) AS m FROM cycles WHERE slot='btc-5m'")[0]["m"]
    assert first == 1_700_042_700_000  # 10:05Z, the first close after the start
