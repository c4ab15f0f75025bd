"""Limit orders from a strategy through the real ``runkernel`` (paper exchange, replay candles
written here): the entry rests, is polled, fills when a candle trades through its price;
a halt and a flatten cancel it; a ``kill -9`` with it resting leaves it resting at the
exchange, and the restarted kernel keeps polling it (one order at the exchange, one fill)."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from kernel.control import atomic_write_text
from kernel.feeds.replay import write_csv
from kernel.protocol import SlotConfig
from kernel.strategy_api import Candle
from tests.support.kernel_process import KernelProcess
from tests.support.kernelctl_run import kernelctl
from tests.support.ledger_reader import sqlite_rows as rows
from tests.support.slot_seeds import seed_slots
from tests.support.strategy_folders import write_strategies

pytestmark = [pytest.mark.integration]

START_MS = 1_700_000_100_000 - 1_700_000_100_000 % 900_000
TF = 300_000
LIMIT = 95.0
DIP_AT = 40  # the first candle that trades through the limit (low 94), 40 candles in: opens at 99

# Enters once with a GTC limit buy at 95 (qty 100/95), then holds: the order rests until filled.
LIMIT_ENTRY = '''\
from kernel.strategy_api import Context, Decision, StrategyParams


class Params(StrategyParams):
    pass


def warmup(params):
    return 2


def evaluate(ctx: Context) -> Decision:
    if ctx.state.get("sent"):
        return Decision.hold("resting or filled")
    return Decision.enter("limit entry", {"sent": True}, limit_price=95.0)
'''


def _candles(n: int) -> list[Candle]:
    out = []
    for i in range(n):
        low = 94.0 if i == DIP_AT else 99.0
        out.append(Candle(ts=START_MS + i * TF, open=100.0 if i != DIP_AT else 99.0, high=101.0, low=low,
                          close=100.0, volume=1.0))
    return out


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "candles").mkdir()
    write_csv(tmp_path / "candles" / "BTC-USDT_5m.csv", _candles(400))
    state = tmp_path / "state"
    seed_slots(state, [SlotConfig(id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="limit_entry",
                                  order_notional=100.0)])
    return {"candles": tmp_path / "candles", "state": state,
            "strategies": write_strategies(tmp_path / "strategies", {"limit_entry": LIMIT_ENTRY})}


def _kernel(world: dict[str, Path], speed: str) -> KernelProcess:
    return KernelProcess(world["state"], ["--feed", "replay", "--replay-dir", str(world["candles"]), "--speed", speed,
                                          "--strategies-dir", str(world["strategies"]), "--tick-ms", "20",
                                          "--cash", "10000"])


def _exchange(state: Path, sql: str) -> list[dict]:
    return rows(state / "paper-exchange.sqlite3", sql)


def _resting(status: dict, slot: str = "btc-5m") -> list[dict]:
    return next(s for s in status["slots"] if s["id"] == slot)["resting_orders"]


def test_a_limit_entry_rests_then_fills_when_a_candle_trades_through(world):
    k = _kernel(world, "inf").start(wait=False)
    try:
        assert k.wait_exit(timeout=120) == 0, k.log_tail()
    finally:
        k.cleanup()
    (order,) = _exchange(world["state"], "SELECT * FROM orders")
    assert (order["type"], order["limit_price"], order["status"]) == ("limit", LIMIT, "filled")
    (fill,) = _exchange(world["state"], "SELECT * FROM fills")
    dip_ts = START_MS + DIP_AT * TF
    assert (fill["price"], fill["ts_ms"]) == (LIMIT, dip_ts)  # opened at 99, low 94: at the limit
    assert fill["fee"] == pytest.approx(100.0 * 0.001)  # qty 100/95 at 95, the paper fee rate 0.1 %
    (lfill,) = rows(world["state"] / "ledger.sqlite3", "SELECT * FROM fills")
    assert (lfill["fill_id"], lfill["price"], lfill["qty"]) == (fill["fill_id"], LIMIT, pytest.approx(100.0 / 95.0))
    (pos,) = rows(world["state"] / "ledger.sqlite3", "SELECT * FROM positions")
    assert pos["qty"] == pytest.approx(100.0 / 95.0)


def test_halt_cancels_a_resting_limit_order(world):
    k = _kernel(world, "60").start()
    try:
        st = k.wait(lambda s: _resting(s), what="the limit entry resting")
        (resting,) = _resting(st)
        assert (resting["limit_price"], resting["side"], resting["status"]) == (LIMIT, "buy", "open")
        shown = kernelctl("--state-dir", str(k.state_dir), "status")  # the operator sees it resting
        assert shown.returncode == 0, shown.stderr
        assert f"resting buy {resting['qty']} @ {LIMIT} GTC" in shown.stdout
        assert resting["client_order_id"] in shown.stdout
        atomic_write_text(k.state_dir / "control.json", '{"halt": true}')
        st = k.wait(lambda s: s["halt"].get("flushed_at"), what="the halt's cancel sweep")
        assert st["halt"]["cancelled_orders"] == [resting["client_order_id"]]
        assert _resting(k.next_status()) == []
        (order,) = _exchange(world["state"], "SELECT * FROM orders")
        assert order["status"] == "cancelled"
    finally:
        k.stop()


def test_flatten_cancels_a_resting_limit_order(world):
    k = _kernel(world, "60").start()
    try:
        st = k.wait(lambda s: _resting(s), what="the limit entry resting")
        cid = _resting(st)[0]["client_order_id"]
        res = k.ok("slot.flatten", slot="btc-5m")
        assert res["detail"]["resting_cancelled"] == 1, res
        k.wait(lambda s: _resting(s) == [], what="no resting order")
        (order,) = _exchange(world["state"], "SELECT * FROM orders")
        assert (order["client_order_id"], order["status"]) == (cid, "cancelled")
    finally:
        k.stop()


def test_kill_9_with_a_resting_order_then_restart_keeps_polling_it(world):
    k = _kernel(world, "120").start()
    try:
        st = k.wait(lambda s: _resting(s), what="the limit entry resting")
        cid = _resting(st)[0]["client_order_id"]
        assert k.kill9() == -signal.SIGKILL
    finally:
        k.cleanup()
    (order,) = _exchange(world["state"], "SELECT * FROM orders")
    assert (order["client_order_id"], order["status"]) == (cid, "open")
    k2 = _kernel(world, "inf").start(wait=False)
    try:
        assert k2.wait_exit(timeout=120) == 0, k2.log_tail()
    finally:
        k2.cleanup()
    orders = _exchange(world["state"], "SELECT * FROM orders")
    assert [(o["client_order_id"], o["status"]) for o in orders] == [(cid, "filled")]  # one order, never resent
    (fill,) = rows(world["state"] / "ledger.sqlite3", "SELECT * FROM fills")
    assert (fill["client_order_id"], fill["price"]) == (cid, LIMIT)
    (lorder,) = rows(world["state"] / "ledger.sqlite3", "SELECT * FROM orders")
    assert lorder["status"] == "filled"


# -- ccxt over the loopback fake Binance ----------------------------------------------------

# Enters once with a GTC limit buy at ``buy_at``; holding, exits once with a limit sell at ``sell_at``
# that expires after 2 candles.
LIMIT_ROUND_TRIP = '''\
from kernel.strategy_api import Context, Decision, StrategyParams


class Params(StrategyParams):
    buy_at: float
    sell_at: float


def warmup(params):
    return 2


def evaluate(ctx: Context) -> Decision:
    p = ctx.params
    if ctx.position > 0:
        if ctx.state.get("exit_sent"):
            return Decision.hold("exit sent")
        return Decision.exit("limit exit", {**ctx.state, "exit_sent": True}, limit_price=p.sell_at, expire_candles=2)
    if ctx.state.get("entry_sent"):
        return Decision.hold("entry sent")
    return Decision.enter("limit entry", {"entry_sent": True}, limit_price=p.buy_at)
'''


def test_ccxt_limit_orders_rest_fill_in_part_fill_and_expire_over_http(tmp_path: Path) -> None:
    import time

    from kernel.feeds.synthetic import SyntheticFeed
    from tests.support.fake_binance import TEST_KEY, TEST_SECRET, FakeBinanceServer
    from tests.support.kernel_process import kernel_env
    from tests.support.waiting import wait_until

    minute = 60_000
    now = time.time_ns() // 1_000_000
    start_ms = now - now % minute - 30 * minute
    history = SyntheticFeed(7).candles("BTC/USDT", "1m", now + minute, 120)
    close = round(history[-1].close, 2)
    entry, exit_ = round(close * 0.9, 2), round(close * 1.1, 2)
    qty = int(100.0 / entry * 1e5) / 1e5  # the slot's 100 USDT at the limit, down to Binance's BTC step 1e-5
    state = tmp_path / "state"
    strategies = write_strategies(tmp_path / "strategies", {"limit_rt": LIMIT_ROUND_TRIP})
    seed_slots(state, [SlotConfig(id="btc-1m", symbol="BTC/USDT", timeframe="1m", strategy="limit_rt",
                                  order_notional=100.0, params={"buy_at": entry, "sell_at": exit_})])
    ledger = state / "ledger.sqlite3"
    with FakeBinanceServer(prices={"BTCUSDT": close}) as ex:
        ex.add_candles("BTCUSDT", "1m", history)
        k = KernelProcess(state, [
            "--feed", "ccxt", "--broker", "ccxt", "--exchange", "binance", "--exchange-url", ex.url,
            "--strategies-dir", str(strategies), "--speed", "10", "--start", str(start_ms), "--tick-ms", "20",
        ], env=kernel_env(FORESIGHT_BINANCE_API_KEY=TEST_KEY, FORESIGHT_BINANCE_SECRET=TEST_SECRET)).start()
        try:
            def resting_at_exchange():
                return [o for o in ex.exchange.orders.values() if o["type"] == "LIMIT" and o["status"] == "NEW"]
            (order,) = wait_until(resting_at_exchange, timeout=60, what="the limit entry at the exchange",
                                  abort=lambda: k.check_alive())
            cid = order["clientOrderId"]
            assert (order["side"], float(order["price"]), float(order["origQty"]), order["timeInForce"]) == (
                "BUY", entry, qty, "GTC")
            st = k.wait(lambda s: _resting(s, "btc-1m"), what="the entry resting in status.json")
            assert [(r["client_order_id"], r["limit_price"]) for r in _resting(st, "btc-1m")] == [(cid, entry)]

            # A partial fill (40 %), booked while the order still rests, then the rest.
            part = round(qty * 0.4, 5)
            assert ex.trade_limits("BTCUSDT", entry, part) == 1
            wait_until(lambda: len(rows(ledger, "SELECT * FROM fills")) == 1, timeout=30, what="the partial fill",
                       abort=lambda: k.check_alive())
            (lo,) = rows(ledger, "SELECT * FROM orders")
            assert (lo["status"], lo["filled_qty"]) == ("open", pytest.approx(part))
            assert ex.trade_limits("BTCUSDT", entry) == 1
            wait_until(lambda: rows(ledger, "SELECT status FROM orders WHERE client_order_id=?", (cid,))[0]["status"]
                       == "filled", timeout=30, what="the entry filled", abort=lambda: k.check_alive())
            fills = rows(ledger, "SELECT qty, price, fee FROM fills WHERE client_order_id=? ORDER BY seq", (cid,))
            assert [(f["qty"], f["price"]) for f in fills] == [
                (pytest.approx(part), entry), (pytest.approx(qty - part), entry)]
            assert sum(f["fee"] for f in fills) == pytest.approx(qty * entry * 0.001)

            # Holding: the limit exit rests, never trades, and is cancelled after 2 candles.
            def exit_order():
                return [o for o in rows(ledger, "SELECT * FROM orders WHERE intent='exit'")]
            (ex_order,) = wait_until(exit_order, timeout=60, what="the limit exit", abort=lambda: k.check_alive())
            wait_until(lambda: ex.exchange.orders[ex_order["client_order_id"]]["status"] == "CANCELED", timeout=60,
                       what="the exit cancelled at expiry", abort=lambda: k.check_alive())
            wait_until(lambda: rows(ledger, "SELECT status FROM orders WHERE intent='exit'")[0]["status"]
                       == "cancelled", timeout=30, what="the ledger says cancelled", abort=lambda: k.check_alive())
        finally:
            k.stop()
    assert [o["clientOrderId"] for o in ex.exchange.orders.values()] == [cid, ex_order["client_order_id"]]
    (pos,) = rows(ledger, "SELECT qty FROM positions")
    assert pos["qty"] == pytest.approx(qty)
