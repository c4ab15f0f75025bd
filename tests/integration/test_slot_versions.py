"""What status.json says each slot runs (issue 10, item 6), across a real reload in a real
``runkernel``: ``slots[].strategy_version``/``strategy_sha256`` name what the slot's next cycle
runs (the new version as soon as it is swapped in), ``last_cycle_version``/``last_cycle_sha256``
what its last cycle ran — the ledger's record of that cycle agrees."""
from __future__ import annotations

import pytest

from tests.support.ledger_reader import sqlite_rows as query
from tests.support.status_reader import iso_to_ms
from tests.support.strategy_folders import write_strategies
from tests.support.strategy_sources import hold_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_slot_reports_the_version_of_its_next_cycle_and_of_its_last(kernels, tmp_path):
    strategies = write_strategies(tmp_path / "strategies", {"__init__": "", "tagged": hold_source(tag="v1", warmup=3)})
    k = kernels(strategies=strategies, demo=False, speed=600, tick_ms=100)
    k.ok("slot.add", "btc-5m", {"id": "btc-5m", "symbol": "BTC/USDT", "timeframe": "5m", "strategy": "tagged"})
    st = k.wait(lambda s: k.slot(s, "btc-5m")["last_cycle_version"] == 1, what="a cycle of v1")
    v1 = st["strategies"]["tagged"]["sha256"]
    assert k.slot(st, "btc-5m")["last_cycle_sha256"] == v1
    k.ok("stop")  # no cycle between the reload and the look at status.json
    (strategies / "tagged.py").write_text(hold_source(tag="v2", warmup=3))
    r = k.ok("reload", args={"strategy": "tagged"})
    assert r["detail"]["strategies"][0]["result"] == "loaded", r
    st = k.wait(lambda s: s["strategies"]["tagged"]["version"] == 2, what="v2 current")
    v2 = st["strategies"]["tagged"]["sha256"]
    slot = k.slot(st, "btc-5m")
    assert (slot["strategy_version"], slot["strategy_sha256"]) == (2, v2), "what its next cycle runs"
    assert (slot["last_cycle_version"], slot["last_cycle_sha256"]) == (1, v1), "what its last cycle ran"
    ledger = k.state_dir / "ledger.sqlite3"
    last = query(ledger, "SELECT * FROM cycles WHERE slot = 'btc-5m' ORDER BY candle_ms DESC LIMIT 1")[0]
    assert (last["candle_ms"], last["version"], last["sha256"]) == (iso_to_ms(slot["last_cycle_at"]), 1, v1)
    k.ok("start")
    st = k.wait(lambda s: k.slot(s, "btc-5m")["last_cycle_version"] == 2, what="a cycle of v2")
    slot = k.slot(st, "btc-5m")
    assert (slot["strategy_version"], slot["last_cycle_sha256"]) == (2, v2)
    rows = query(ledger, "SELECT version, sha256, reason FROM cycles WHERE slot = 'btc-5m' ORDER BY candle_ms")
    assert rows[-1]["sha256"] == v2 and rows[-1]["reason"] == "v2"
    assert {r["version"] for r in rows} == {1, 2}
