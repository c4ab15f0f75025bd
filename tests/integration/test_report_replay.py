"""``kernelctl report`` on a real replay's state dir (after it ends, and while it runs): its
trades and total P&L are the ledger's own (status.json ``ledger``), in JSON, CSV and text."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.feeds.replay import export_synthetic
from kernel.protocol import SlotConfig
from tests.support.checkout import REPO
from tests.support.kernel_process import KernelProcess, kernel_env
from tests.support.ledger_reader import sqlite_rows as rows
from tests.support.slot_seeds import seed_slots
from tests.support.status_reader import read_status
from tests.support.strategy_folders import write_strategies
from tests.support.strategy_sources import FLIPFLOP

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START_MS = 1_700_000_100_000 - 1_700_000_100_000 % 900_000
HOURS = 30
SLOTS = [
    SlotConfig(id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="flipflop"),
    SlotConfig(id="eth-15m", symbol="ETH/USDT", timeframe="15m", strategy="ema_cross", params={"fast": 5, "slow": 12}),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-world")
    export_synthetic(root / "candles", ["BTC/USDT", "ETH/USDT"], ["5m", "15m"], START_MS,
                     START_MS + HOURS * 3_600_000, seed=11)
    return {"candles": root / "candles",
            "strategies": write_strategies(root / "strategies", {"flipflop": FLIPFLOP}, with_repo=["ema_cross"])}


def kernelctl(state: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "kernelctl", "--state-dir", str(state), "report", *args],
                          cwd=REPO, env=kernel_env(settings="foresight_site.settings"), capture_output=True,
                          text=True, timeout=120)


def replay(state: Path, world: dict[str, Path], speed: str) -> KernelProcess:
    seed_slots(state, SLOTS)
    return KernelProcess(state, ["--feed", "replay", "--replay-dir", str(world["candles"]), "--strategies-dir",
                                 str(world["strategies"]), "--tick-ms", "5", "--speed", speed, "--cash", "50000"])


def test_kernelctl_report_of_a_finished_replay_is_the_ledgers(tmp_path: Path, world) -> None:
    state = tmp_path / "state"
    kernel = replay(state, world, "inf")
    assert kernel.start(wait=False).wait_exit(timeout=180) == 0, kernel.log_tail()
    ledger = read_status(state)["ledger"]
    assert ledger["trades"] > 20, "the replay traded"

    out = kernelctl(state, "--format", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["trades"] == ledger["trades"] and report["wins"] == ledger["wins"]
    assert report["realized_pnl"] == pytest.approx(ledger["realized_pnl"], abs=1e-6)
    assert report["fees"] == pytest.approx(ledger["fees"], abs=1e-6)
    assert report["starting_equity"] == 50_000.0  # --cash
    assert report["fills"] == ledger["fills"]
    # Every trade names the strategy version that opened it, as the ledger's cycles record it.
    versions = {(c["slot"], c["version"], c["sha256"]) for c in
                rows(state / "ledger.sqlite3", "SELECT DISTINCT slot, version, sha256 FROM cycles")}
    assert all((t["slot"], t["version"], t["sha256"]) in versions for t in report["trade_list"])

    out = kernelctl(state, "--format", "csv")
    assert out.returncode == 0, out.stderr
    trades = list(csv.DictReader(io.StringIO(out.stdout)))
    closed = [t for t in trades if t["open"] == "0"]
    assert len(closed) == ledger["trades"]
    # Realised P&L: the closed round trips' P&L plus the entry fees of the ones still open.
    total = sum(float(t["pnl"]) for t in closed) - sum(float(t["fees"]) for t in trades if t["open"] == "1")
    assert total == pytest.approx(ledger["realized_pnl"], abs=1e-6)

    text = kernelctl(state)
    assert text.returncode == 0, text.stderr
    assert "SUMMARY METRICS" in text.stdout and "btc-5m" in text.stdout and "eth-15m" in text.stdout

    one = json.loads(kernelctl(state, "--json", "--slot", "eth-15m").stdout)
    eth = next(s for s in read_status(state)["slots"] if s["id"] == "eth-15m")
    assert one["trades"] == eth["position"]["trades"]
    assert one["realized_pnl"] == pytest.approx(eth["position"]["realized_pnl"], abs=1e-6)

    bad = kernelctl(state, "--since", "yesterday")
    assert bad.returncode != 0 and "not a date" in bad.stderr
    assert kernelctl(tmp_path / "nothing-here").returncode != 0


def test_kernelctl_report_while_the_kernel_runs(tmp_path: Path, world) -> None:
    state = tmp_path / "live"
    kernel = replay(state, world, "3000")  # 30 simulated hours in ~36 s: the report reads it mid-way
    kernel.start(wait=False)
    try:
        kernel.wait(lambda st: st["ledger"]["trades"] >= 3, timeout=120, what="a few round trips")
        out = kernelctl(state, "--format", "json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["trades"] >= 3 and report["fills"] >= 6
        assert kernel.alive(), "the report did not disturb the kernel"
    finally:
        kernel.cleanup()
