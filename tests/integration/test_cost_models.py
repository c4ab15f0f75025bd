"""Cost models of the paper broker as runkernel options (issue 12, item 7): ``--fee-rate``,
``--slippage-bps`` and ``--fill-price close|next-open``, through a real replay kernel. The
expected prices and fees are computed here from the replay's CSV, not from the broker."""
from __future__ import annotations

from pathlib import Path

import pytest

from kernel.feeds.replay import csv_name, export_synthetic, read_csv, write_csv
from kernel.protocol import SlotConfig
from kernel.strategy_api import Candle
from tests.support.kernel_process import KernelProcess
from tests.support.ledger_reader import sqlite_rows as rows
from tests.support.slot_seeds import seed_slots
from tests.support.strategy_folders import write_strategies
from tests.support.strategy_sources import FLIPFLOP

pytestmark = [pytest.mark.integration]

START_MS = 1_700_000_100_000 - 1_700_000_100_000 % 900_000
HOURS = 4
TF_MS = 300_000


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("costs-world")
    export_synthetic(root / "candles", ["BTC/USDT"], ["5m"], START_MS, START_MS + HOURS * 3_600_000, seed=11)
    # Gaps between a close and the next open (the synthetic path has none), so that the
    # two fill prices differ: the open moves by -0.3 % .. +0.3 %.
    path = root / "candles" / csv_name("BTC/USDT", "5m")
    gapped = []
    for i, c in enumerate(read_csv(path, "5m")):
        o = c.open * (1 + 0.001 * (i % 7 - 3))
        gapped.append(Candle(c.ts, o, max(c.high, o), min(c.low, o), c.close, c.volume))
    write_csv(path, gapped)
    return {"candles": root / "candles",
            "strategies": write_strategies(root / "strategies", {"flipflop": FLIPFLOP})}


def _replay(state: Path, world: dict[str, Path], *args: str) -> list[dict]:
    seed_slots(state, [SlotConfig(id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="flipflop")])
    kernel = KernelProcess(state, ["--feed", "replay", "--replay-dir", str(world["candles"]),
                                   "--strategies-dir", str(world["strategies"]), "--tick-ms", "5",
                                   "--speed", "inf", *args])
    code = kernel.start(wait=False).wait_exit(timeout=120)
    assert code == 0, (state / "kernel.log").read_text(errors="replace")[-3000:]
    return rows(state / "ledger.sqlite3",
                "SELECT o.client_order_id, o.candle_ms, o.side, o.status, o.error, f.qty, f.price, f.fee, f.ts_ms"
                " FROM orders o LEFT JOIN fills f USING (client_order_id) ORDER BY o.candle_ms")


def _candles(world) -> dict[int, object]:
    return {c.ts: c for c in read_csv(world["candles"] / csv_name("BTC/USDT", "5m"), "5m")}


def test_defaults_fill_at_the_signal_close_with_5bp_and_a_0_1_percent_fee(tmp_path, world) -> None:
    by_open = _candles(world)
    orders = _replay(tmp_path / "k", world)
    filled = [o for o in orders if o["status"] == "filled"]
    assert len(filled) > 30
    for o in filled:
        close = by_open[o["candle_ms"] - TF_MS].close  # the signal candle closes at candle_ms
        want = close * (1.0005 if o["side"] == "buy" else 0.9995)
        assert o["price"] == pytest.approx(want, rel=1e-12)
        assert o["fee"] == pytest.approx(0.001 * o["qty"] * want, rel=1e-12)


def test_fee_slippage_and_next_open_from_the_command_line(tmp_path, world) -> None:
    by_open = _candles(world)
    last_open = max(by_open)
    orders = _replay(tmp_path / "k", world, "--fee-rate", "0.0025", "--slippage-bps", "12",
                     "--fill-price", "next-open")
    filled = [o for o in orders if o["status"] == "filled"]
    assert len(filled) > 30
    differs = 0
    for o in filled:
        nxt = by_open[o["candle_ms"]]  # the next candle opens at the signal candle's close
        want = nxt.open * (1.0012 if o["side"] == "buy" else 0.9988)
        assert o["price"] == pytest.approx(want, rel=1e-12)
        assert o["fee"] == pytest.approx(0.0025 * o["qty"] * want, rel=1e-12)
        differs += by_open[o["candle_ms"] - TF_MS].close != nxt.open
    assert differs > len(filled) // 2, "the next open differs from the signal close: the test has teeth"
    # The last close has no next candle: that order is rejected, never filled at a stale price.
    end = [o for o in orders if o["candle_ms"] == last_open + TF_MS]
    assert end and end[0]["status"] == "rejected" and "no next candle" in end[0]["error"]


@pytest.mark.parametrize("args,needle", [
    (["--feed", "ccxt", "--broker", "ccxt", "--exchange", "binance", "--fee-rate", "0.001"],
     "model the paper broker"),
    (["--feed", "ccxt", "--exchange", "binance", "--fill-price", "next-open"], "needs a feed that has the next"),
    (["--fee-rate", "1.5"], "fee_rate must be in [0, 1)"),
])
def test_cost_options_refused_where_they_mean_nothing(tmp_path, args, needle) -> None:
    kernel = KernelProcess(tmp_path / "k", args)
    code = kernel.start(wait=False).wait_exit(timeout=60)
    assert code != 0
    assert needle in kernel.log_tail(200)
