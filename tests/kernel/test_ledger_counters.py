"""status.json's ledger part kept in memory (kernel/ledger_counters.py): the same, key for key
and value for value, as the ledger's own queries (Ledger.summary, recent_fills, positions,
kernel.ledger_resting.resting_by_slot), while trading, across a restart, for resting limit
orders, past the 200-fill window, and untouched by a rolled-back transaction."""
from __future__ import annotations

import pytest

from kernel.ledger import Ledger
from kernel.ledger_resting import resting_by_slot
from kernel.strategy_api import Decision
from tests.kernel.kernel_driver import M5
from tests.kernel.test_limit_orders import T0, TF, at, parts  # noqa: F401 - the fixture
from tests.support.ledger_reader import sqlite_rows


def same_as_sql(ledger: Ledger) -> None:
    c = ledger.counters
    assert c.summary() == ledger.summary()
    assert c.recent_fills() == ledger.recent_fills(200)
    assert c.positions() == ledger.positions()
    assert c.resting_by_slot() == resting_by_slot(ledger)


def test_counters_follow_trading_and_a_restart_loads_them_back(driver):
    for i in range(3):
        driver.add_slot(f"flip-{i}", "flip")
    for _ in range(5):
        driver.advance(M5)
        same_as_sql(driver.kernel.ledger)
    ledger = driver.kernel.ledger
    n_fills = sqlite_rows(ledger.path, "SELECT COUNT(*) AS n FROM fills")[0]["n"]
    n_orders = sqlite_rows(ledger.path, "SELECT COUNT(*) AS n FROM orders")[0]["n"]
    assert n_fills >= 6 and ledger.counters.summary()["fills"] == n_fills
    assert ledger.counters.summary()["orders"] == n_orders
    snap = driver.kernel.snapshot()
    assert snap["ledger"]["fills"] == n_fills and len(snap["fills"]) == n_fills
    before = ledger.counters.summary()
    driver.restart()
    assert driver.kernel.ledger.counters.summary() == before
    same_as_sql(driver.kernel.ledger)


def test_resting_limit_orders_appear_and_go_with_their_fill(parts):  # noqa: F811
    r = parts.decide(Decision.enter(limit_price=99.0), key="k1")
    assert r["status"] == "open"
    resting = parts.ledger.counters.resting_by_slot()
    assert [(o["client_order_id"], o["limit_price"], o["status"], o["filled_qty"]) for o in resting["btc-5m"]] \
        == [(r["client_order_id"], 99.0, "open", 0.0)]
    assert parts.ledger.counters.summary()["open_orders"] == 1
    assert parts.ledger.counters.has_resting("btc-5m") and parts.ledger.counters.has_resting()
    assert not parts.ledger.counters.has_resting("eth-5m")
    same_as_sql(parts.ledger)
    at(parts, T0 + 3 * TF + 1)  # the candle that dips to 98.9 closed: the limit fills
    assert parts.execution.resting.poll() == 1
    assert parts.ledger.counters.resting_by_slot() == {}
    assert not parts.ledger.counters.has_resting("btc-5m")
    s = parts.ledger.counters.summary()
    assert (s["orders"], s["open_orders"], s["fills"]) == (1, 0, 1)
    assert parts.ledger.counters.positions()["btc-5m"].qty == pytest.approx(1.0)
    same_as_sql(parts.ledger)


def test_the_recent_fills_window_slides_past_200(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        for i in range(205):
            side = "buy" if i % 2 == 0 else "sell"
            assert ledger.record_intent(client_order_id=f"o{i}", slot="s1", symbol="BTC/USDT", candle_ms=i,
                                        intent="entry" if side == "buy" else "exit", side=side, qty=1.0,
                                        ref_price=100.0)
            ledger.mark_order(f"o{i}", "sent")
            ledger.record_fill(fill_id=f"f{i}", client_order_id=f"o{i}", qty=1.0, price=100.0 + i, fee=0.1, ts_ms=i)
        s = ledger.counters.summary()
        # 205 orders, all filled; 102 round trips (each sell at one more than its buy), all won.
        assert (s["orders"], s["open_orders"], s["fills"], s["trades"], s["wins"]) == (205, 0, 205, 102, 102)
        recent = ledger.counters.recent_fills()
        assert len(recent) == 200 and recent[0]["fill_id"] == "f5" and recent[-1]["fill_id"] == "f204"
        same_as_sql(ledger)
    finally:
        ledger.close()


def test_a_rolled_back_transaction_leaves_the_counters_alone(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        with pytest.raises(RuntimeError):
            with ledger._tx() as db:
                db.execute("INSERT INTO orders(client_order_id, slot, symbol, intent, side, qty, status,"
                           " created_ms, updated_ms) VALUES('x', 's1', 'BTC/USDT', 'entry', 'buy', 1, 'intent', 0, 0)")
                raise RuntimeError("rolled back")
        assert ledger.counters.summary()["orders"] == 0 and ledger.orders() == []
        assert ledger.record_intent(client_order_id="y", slot="s1", symbol="BTC/USDT", candle_ms=1, intent="entry",
                                    side="buy", qty=1.0, ref_price=100.0)
        s = ledger.counters.summary()
        assert (s["orders"], s["open_orders"]) == (1, 1)
        same_as_sql(ledger)
    finally:
        ledger.close()
