"""``runkernel --feed replay``: a strategy over history through the kernel's own code path,
at any speed, with the same orders and fills run after run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kernel import control_client
from kernel.feeds.replay import export_synthetic
from kernel.protocol import SlotConfig, ms_to_iso
from tests.support.checkout import REPO
from tests.support.kernel_process import KernelProcess, kernel_env
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
        "fills": rows(db, "SELECT fill_id, client_order_id, slot, side, qty, price, fee, ts_ms, pnl FROM fills"
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


def test_paper_ids_are_the_same_for_any_worker_count_and_speed_inf_status_is_valid(tmp_path: Path, world) -> None:
    one, many = tmp_path / "one", tmp_path / "many"
    _replay(one, world, "--speed", "inf", "--workers", "1")
    _replay(many, world, "--speed", "inf", "--workers", "6")
    a, b = _books(one), _books(many)
    assert a["fills"] and a["fills"] == b["fills"], "fill ids (and everything else) equal whatever the workers"
    ids_sql = "SELECT client_order_id, broker_order_id FROM orders WHERE status='filled' ORDER BY client_order_id"
    ids = rows(one / "ledger.sqlite3", ids_sql)
    assert ids == rows(many / "ledger.sqlite3", ids_sql)
    assert all(o["broker_order_id"] == "P-" + o["client_order_id"] for o in ids)
    assert all(f["fill_id"] == f"P-{f['client_order_id']}-F1" for f in a["fills"])

    # status.json of a --speed inf replay: speed null (JSON has no infinity), and the readers accept it.
    assert read_status(one)["speed"] is None
    status = control_client.status(one)
    assert status is not None and status.speed is None
    out = subprocess.run([sys.executable, "manage.py", "kernelctl", "--state-dir", str(one), "status", "--json"],
                         cwd=REPO, env=kernel_env(settings="foresight_site.settings"), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["speed"] is None


def test_a_replay_on_binances_markets_orders_whole_steps_and_counts_each_exit_as_a_round_trip(tmp_path: Path,
                                                                                             world) -> None:
    state = tmp_path / "binance"
    _replay(state, world, "--speed", "inf", "--paper-markets", "binance")
    orders = rows(state / "ledger.sqlite3", "SELECT slot, symbol, intent, qty, status FROM orders")
    steps = {"BTC/USDT": 1e-5, "ETH/USDT": 1e-4}
    filled = [o for o in orders if o["status"] == "filled"]
    assert filled and all(abs(o["qty"] / steps[o["symbol"]] - round(o["qty"] / steps[o["symbol"]])) < 1e-6
                          for o in filled), "every quantity a whole number of the market's step"
    status = read_status(state)
    for slot in status["slots"]:
        exits = sum(1 for o in filled if o["slot"] == slot["id"] and o["intent"] == "exit")
        assert slot["position"]["trades"] == exits and slot["dust_qty"] == 0.0
    assert status["ledger"]["trades"] == sum(1 for o in filled if o["intent"] == "exit")


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


def test_a_gap_in_the_candles_skips_its_cycle_and_the_end_of_a_files_data_stops_its_slot(tmp_path: Path, world) -> None:
    """The cycle whose candle is missing does not evaluate the stale window: it is recorded
    ``skipped`` with the reason, no order. A slot whose file ends before the others is stopped
    once, visibly (its fault says so), while the others run to the last candle."""
    from kernel.feeds.replay import csv_name, read_csv, write_csv

    end = START_MS + 2 * 3_600_000
    src = world["candles"]
    btc = [c for c in read_csv(src / csv_name("BTC/USDT", "5m")) if c.ts + 300_000 <= end]
    eth = [c for c in read_csv(src / csv_name("ETH/USDT", "5m")) if c.ts + 300_000 <= end - 3_600_000]
    gap_open = START_MS + 30 * 60_000  # the candle of 00:30-00:35 after the start is missing
    candles = tmp_path / "candles"
    write_csv(candles / csv_name("BTC/USDT", "5m"), [c for c in btc if c.ts != gap_open])
    write_csv(candles / csv_name("ETH/USDT", "5m"), eth)
    eth_end = eth[-1].ts + 300_000
    state = tmp_path / "gappy"
    seed_slots(state, [SlotConfig(id="btc", symbol="BTC/USDT", timeframe="5m", strategy="flipflop"),
                       SlotConfig(id="eth", symbol="ETH/USDT", timeframe="5m", strategy="flipflop")])
    kernel = KernelProcess(state, ["--feed", "replay", "--replay-dir", str(candles), "--speed", "inf",
                                   "--strategies-dir", str(world["strategies"]), "--tick-ms", "5"])
    code = kernel.start(wait=False).wait_exit(timeout=120)
    assert code == 0, (state / "kernel.log").read_text(errors="replace")[-3000:]

    db = state / "ledger.sqlite3"
    cycles = rows(db, "SELECT slot, candle_ms, result, reason FROM cycles ORDER BY slot, candle_ms")
    btc_cycles = {c["candle_ms"]: c for c in cycles if c["slot"] == "btc"}
    gap_close = gap_open + 300_000
    assert btc_cycles[gap_close]["result"] == "skipped"
    assert btc_cycles[gap_close]["reason"] == (
        f"no candle closing at {ms_to_iso(gap_close)} (BTC/USDT 5m): the feed's newest closes at "
        f"{ms_to_iso(gap_open)}; evaluate not called")
    assert [c for c, row in btc_cycles.items() if row["result"] == "skipped"] == [gap_close]
    assert max(btc_cycles) == end, "the other slots run to the last candle"
    orders = rows(db, "SELECT slot, candle_ms FROM orders")
    assert not [o for o in orders if o["slot"] == "btc" and o["candle_ms"] == gap_close], "no order at the gap"
    assert {o["candle_ms"] for o in orders if o["slot"] == "btc"} >= {gap_close - 300_000, gap_close + 300_000}

    eth_cycles = [c for c in cycles if c["slot"] == "eth"]
    skipped = [c for c in eth_cycles if c["result"] == "skipped"]
    reason = f"replay data for ETH/USDT 5m ended at {ms_to_iso(eth_end)}: no more cycles for this slot"
    assert [(c["candle_ms"], c["reason"]) for c in skipped] == [(eth_end + 300_000, reason)], "recorded once"
    assert max(c["candle_ms"] for c in eth_cycles) == eth_end + 300_000
    assert not [o for o in orders if o["slot"] == "eth" and o["candle_ms"] > eth_end]
    status = read_status(state)
    slot = next(s for s in status["slots"] if s["id"] == "eth")
    assert slot["state"] == "paused" and slot["fault"] == reason
    assert next(s for s in status["slots"] if s["id"] == "btc")["fault"] is None
    assert status["cycles"]["skipped"] == 2 and status["clock_at"] == ms_to_iso(end)
