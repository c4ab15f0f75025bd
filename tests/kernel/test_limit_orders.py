"""Limit orders from strategies, on the kernel's own parts: a real ledger, gate, paper exchange
and replay feed (CSV candles written here, prices chosen by hand)."""
from __future__ import annotations

import pytest

from kernel.brokers import OrderRequest
from kernel.brokers.paper import PaperBroker
from kernel.changes import Changes
from kernel.clock import ManualClock
from kernel.errors import StrategyFault
from kernel.execution import Execution
from kernel.feeds.replay import ReplayFeed, write_csv
from kernel.gate import OrderGate
from kernel.halt import HaltController
from kernel.ledger import Ledger
from kernel.ledger_resting import resting_orders
from kernel.protocol import SlotConfig
from kernel.run_state import RunState
from kernel.slot_runtime import SlotRuntime
from kernel.strategy_api import Candle, Decision

T0 = 1_704_067_200_000
TF = 300_000
# (open, high, low, close) of the candles opening at T0, T0 + 5m, ...: the signal candle closes
# at T0 + 5m at 100; the next ones dip to 99.5, 98.9, then gap down to open at 97 (below 98).
OHLC = [(100, 101, 99, 100), (100, 100.5, 99.5, 100), (100, 100.2, 98.9, 99.5), (97, 98.5, 96, 98)]


def candles(ohlc=OHLC):
    return [Candle(ts=T0 + i * TF, open=o, high=h, low=lo, close=c, volume=1.0) for i, (o, h, lo, c) in enumerate(ohlc)]


class Parts:
    def __init__(self, tmp_path, *, fee_rate=0.001, maker=None) -> None:
        feed_dir = tmp_path / "candles"
        feed_dir.mkdir()
        write_csv(feed_dir / "BTC-USDT_5m.csv", candles())
        self.ledger = Ledger(tmp_path / "ledger.sqlite3")
        self.broker = PaperBroker(None, cash=10_000.0, fee_rate=fee_rate, maker_fee_rate=maker)
        self.gate = OrderGate()
        self.clock = ManualClock(T0 + TF + 1_000)  # just after the signal candle closed
        self.changes = Changes()
        self.halt = HaltController(gate=self.gate, ledger=self.ledger, broker=self.broker, changes=self.changes,
                                   cancel_wait_ms=1_000, settle_timeout_ms=1_000)
        self.slot = SlotRuntime(config=SlotConfig(id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="flip",
                                                  order_notional=100.0, max_notional=1_000.0))
        self.execution = Execution(ledger=self.ledger, broker=self.broker, gate=self.gate, clock=self.clock,
                                   feed=ReplayFeed(feed_dir), run_state=RunState(), halt=self.halt,
                                   changes=self.changes, cycle_deadline_ms=10_000, slots={"btc-5m": self.slot})

    def decide(self, decision: Decision, *, key: str, close_ms: int = T0 + TF, close: float = 100.0) -> dict:
        limit = self.execution.limit_of(decision, timeframe="5m", close_ms=close_ms, close=close)
        side, intent = ("buy", "entry") if decision.action == "enter" else ("sell", "exit")
        qty = 1.0 if side == "buy" else self.slot.position_qty
        return self.execution.send(slot=self.slot, cfg=self.slot.config, intent=intent, side=side, qty=qty,
                                   price=limit["limit_price"] if limit else close, candle_ms=close_ms, key=key,
                                   job=None, limit=limit)

    def close(self) -> None:
        self.broker.close()
        self.ledger.close()


def at(parts: Parts, ms: int) -> None:
    parts.clock.jump(ms - parts.clock.now_ms())


@pytest.fixture
def parts(tmp_path):
    p = Parts(tmp_path)
    yield p
    p.close()


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, words", [
    ({"limit_price": 0.0}, "limit_price must be a finite number > 0"),
    ({"limit_price": float("nan")}, "limit_price must be a finite number > 0"),
    ({"limit_price": "100"}, "limit_price must be a finite number > 0"),
    ({"limit_price": 100.0, "time_in_force": "FOK"}, "time_in_force must be 'GTC' or 'IOC'"),
    ({"limit_price": 100.0, "expire_candles": 0}, "expire_candles must be a whole number >= 1"),
    ({"limit_price": 100.0, "expire_candles": 2, "expire_at_ms": T0}, "not both"),
    ({"limit_price": 100.0, "time_in_force": "IOC", "expire_candles": 2}, "IOC order never rests"),
    ({"expire_candles": 3}, "need a limit_price"),
])
def test_a_bad_limit_is_a_strategy_fault_naming_the_field(kwargs, words):
    with pytest.raises(StrategyFault, match="bad Decision: .*" + words.replace("(", r"\(").replace("'", "'")):
        Decision.enter("x", **kwargs)


def test_a_hold_takes_no_limit_and_market_decisions_are_unchanged():
    with pytest.raises(StrategyFault, match="a hold sends no order"):
        Decision("hold", limit_price=100.0)
    d = Decision.enter("go")
    assert (d.action, d.limit_price, d.time_in_force, d.expire_candles) == ("enter", None, "GTC", None)
    assert Execution.limit_of(d, timeframe="5m", close_ms=T0, close=1.0) is None
    lim = Execution.limit_of(Decision.enter(limit_price=98.0, expire_candles=3), timeframe="5m", close_ms=T0, close=1.0)
    assert lim["expires_ms"] == T0 + 3 * 300_000 and lim["limit_price"] == 98.0


# -- the paper exchange on its own -----------------------------------------------------


def test_paper_fills_a_resting_buy_when_a_later_low_trades_through_at_the_limit_with_the_maker_fee():
    with PaperBroker(None, cash=1_000.0, fee_rate=0.001, maker_fee_rate=0.0002) as b:
        o = b.place_order(OrderRequest("c1", "BTC/USDT", "buy", 2.0, type="limit", limit_price=99.0),
                          ref_price=100.0, now_ms=T0 + TF)
        assert o.status == "open" and o.fills == ()
        c = candles()
        assert b.mark_candle("BTC/USDT", c[0]) == []  # before the order: never fills it
        assert b.mark_candle("BTC/USDT", c[1]) == []  # low 99.5 > 99
        (f,) = b.mark_candle("BTC/USDT", c[2])  # low 98.9 <= 99, opened at 100: at the limit
        assert (f.qty, f.price, f.ts_ms) == (2.0, 99.0, c[2].ts)
        assert f.fee == pytest.approx(2 * 99.0 * 0.0002)
        assert b.balances()["USDT"] == pytest.approx(1_000 - 198 - 0.0396)
        assert b.mark_candle("BTC/USDT", c[3]) == []  # filled: nothing more
        assert b.fetch_order("c1").status == "filled"


def test_paper_fills_at_the_open_when_the_price_gaps_through_the_limit():
    with PaperBroker(None, cash=1_000.0, fee_rate=0.001) as b:
        b.place_order(OrderRequest("c1", "BTC/USDT", "buy", 1.0, type="limit", limit_price=98.0),
                      ref_price=100.0, now_ms=T0 + TF)
        fills = [f for c in candles() for f in b.mark_candle("BTC/USDT", c)]
        assert [(f.price, f.ts_ms) for f in fills] == [(97.0, T0 + 3 * TF)]  # opened at 97 < 98
        assert fills[0].fee == pytest.approx(97.0 * 0.001)  # no maker rate: the fee rate
        # A sell: high >= limit; a gap up fills at the open.
        b.place_order(OrderRequest("c2", "BTC/USDT", "sell", 1.0, type="limit", limit_price=96.5),
                      ref_price=95.0, now_ms=T0 + 3 * TF)
        (f,) = b.mark_candle("BTC/USDT", Candle(T0 + 4 * TF, 97.5, 99.0, 97.0, 98.0, 1.0))
        assert f.price == 97.5


def test_paper_ioc_and_marketable_limits_fill_at_once_or_never():
    with PaperBroker(None, cash=1_000.0, fee_rate=0.001, slippage_bps=0.0) as b:
        o = b.place_order(OrderRequest("c1", "BTC/USDT", "buy", 1.0, type="limit", limit_price=101.0),
                          ref_price=100.0, now_ms=T0)
        assert (o.status, o.avg_price) == ("filled", 100.0)  # marketable: the better price
        o = b.place_order(OrderRequest("c2", "BTC/USDT", "buy", 1.0, type="limit", limit_price=99.0,
                                       time_in_force="IOC"), ref_price=100.0, now_ms=T0)
        assert (o.status, o.filled_qty) == ("cancelled", 0.0)
        assert b.balances()["USDT"] == pytest.approx(1_000 - 100 - 0.1)  # the IOC reserved nothing


# -- resting orders in the kernel -------------------------------------------------------


def test_a_limit_entry_rests_then_one_poll_books_its_fill_once(parts):
    r = parts.decide(Decision.enter(limit_price=99.0), key="k1")
    assert r["status"] == "open" and parts.slot.position_qty == 0.0
    (row,) = resting_orders(parts.ledger, "btc-5m")
    assert (row["limit_price"], row["time_in_force"], row["status"]) == (99.0, "GTC", "open")
    at(parts, T0 + 2 * TF + 1)  # the candle at T0+5m closed: low 99.5, no fill
    assert parts.execution.resting.poll() == 0 and parts.slot.position_qty == 0.0
    at(parts, T0 + 3 * TF + 1)  # the next dipped to 98.9
    assert parts.execution.resting.poll() == 1
    assert parts.execution.resting.poll() == 0  # exactly once
    assert parts.slot.position_qty == pytest.approx(1.0)
    (fill,) = parts.ledger.fills("btc-5m")
    assert (fill["price"], fill["fee"]) == (99.0, pytest.approx(0.099))
    assert resting_orders(parts.ledger) == []
    assert parts.ledger.order(r["client_order_id"])["status"] == "filled"


def test_a_limit_that_expires_is_cancelled_and_polls_stop(parts):
    r = parts.decide(Decision.enter(limit_price=98.0, expire_candles=2), key="k1")
    assert r["status"] == "open"
    at(parts, T0 + 4 * TF + 1)  # expiry at T0+15m: the gap candle (T0+15m) comes after it
    assert parts.execution.resting.poll() == 0
    assert parts.ledger.order(r["client_order_id"])["status"] == "cancelled"
    assert parts.broker.fetch_order(r["client_order_id"]).status == "cancelled"
    assert parts.broker.balances() == {"USDT": 10_000.0}
    assert parts.execution.resting.by_slot() == {}


def test_a_new_decision_replaces_the_resting_order_and_one_that_filled_meanwhile_refuses(parts):
    first = parts.decide(Decision.enter(limit_price=97.0), key="k1")
    assert first["status"] == "open"
    at(parts, T0 + 2 * TF + 1)
    second = parts.decide(Decision.enter(limit_price=99.0), key="k2", close_ms=T0 + 2 * TF)
    assert second["status"] == "open"
    assert parts.ledger.order(first["client_order_id"])["status"] == "cancelled"
    assert [r["client_order_id"] for r in resting_orders(parts.ledger)] == [second["client_order_id"]]
    at(parts, T0 + 3 * TF + 1)  # the second one would fill on the T0+10m candle: replace it now
    third = parts.decide(Decision.enter(limit_price=95.0), key="k3", close_ms=T0 + 3 * TF)
    assert (third["status"], third["reason"]) == ("refused", "resolved")
    assert parts.slot.position_qty == pytest.approx(1.0)
    assert len(parts.broker.open_orders()) == 0


def test_flatten_cancels_the_resting_order_first_and_sells_what_it_bought(parts):
    parts.broker.place_order(OrderRequest("seed", "BTC/USDT", "buy", 1.0), ref_price=100.0, now_ms=T0)
    parts.decide(Decision.enter(limit_price=95.0), key="k1")
    res = parts.execution.flatten(parts.slot, command_id="cmd-1")
    assert res == {"note": "no position to flatten", "qty": 0.0, "resting_cancelled": 1}
    assert parts.broker.open_orders() == []


def test_halt_sweep_cancels_a_resting_order_and_the_ledger_says_so(parts):
    r = parts.decide(Decision.enter(limit_price=95.0), key="k1")
    parts.halt.engage("test", source="test", tick=1)
    assert parts.halt.start_cancels()
    assert parts.halt.state.cancelled_orders == [r["client_order_id"]]
    assert parts.ledger.order(r["client_order_id"])["status"] == "cancelled"
    assert resting_orders(parts.ledger) == []


def test_a_fill_booked_after_the_cycle_looked_stops_its_order_no_second_entry(parts):
    first = parts.decide(Decision.enter(limit_price=99.0), key="k1")
    at(parts, T0 + 3 * TF + 1)
    parts.execution.resting.poll("btc-5m")  # the cycle of T0+15m looks: filled on the T0+10m candle
    assert parts.slot.position_qty == pytest.approx(1.0)
    # A background poll booking a fill after a cycle looked: simulated by an entry resting
    # again, filled by the thread's poll (all slots) before the next decision is sent.
    parts.slot.take_position(parts.ledger.position("btc-5m"))
    assert parts.execution.resting.booked_since_poll("btc-5m") is False
    second = parts.decide(Decision.exit(limit_price=100.5), key="k2", close_ms=T0 + 3 * TF)
    assert second["status"] == "open"
    assert parts.execution.resting.poll() == 0  # the T0+15m candle (high 98.5) is not closed yet... nor crosses
    parts.broker.mark_price("BTC/USDT", 101.0, T0 + 3 * TF + 2)  # the exchange fills it meanwhile
    assert parts.execution.resting.poll() == 1  # the background thread books it
    third = parts.decide(Decision.enter(limit_price=97.0), key="k3", close_ms=T0 + 4 * TF)
    assert (third["status"], third["reason"]) == ("refused", "resolved")
    assert parts.slot.position_qty == pytest.approx(0.0)
    assert [o["client_order_id"] for o in parts.ledger.orders()] == [first["client_order_id"],
                                                                     second["client_order_id"]]


# -- the ccxt broker (ccxt's real Binance class, in-process fake exchange) -------------------


def test_ccxt_partial_fills_are_booked_as_they_happen_once_each_and_expiry_cancels(tmp_path):
    from kernel.brokers.ccxt_broker import CcxtBroker
    from kernel.credentials import Credentials
    from kernel.feeds.synthetic import SyntheticFeed
    from tests.kernel.test_ccxt_broker import BINANCE_KEY, BINANCE_SECRET, _client
    from tests.support.fake_binance import _Exchange

    fake = _Exchange()
    broker = CcxtBroker(_client("binance", fake, Credentials("binance", "test", BINANCE_KEY, BINANCE_SECRET)),
                        retry_budget_s=2.0, fill_wait_s=0.2, dead_man_switch=False)
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    broker.use_ledger(ledger)
    gate, changes, clock = OrderGate(), Changes(), ManualClock(T0 + TF + 1_000)
    halt = HaltController(gate=gate, ledger=ledger, broker=broker, changes=changes, cancel_wait_ms=1_000,
                          settle_timeout_ms=1_000)
    slot = SlotRuntime(config=SlotConfig(id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="flip",
                                         order_notional=100.0, max_notional=1_000.0))
    execution = Execution(ledger=ledger, broker=broker, gate=gate, clock=clock, feed=SyntheticFeed(seed=7),
                          run_state=RunState(), halt=halt, changes=changes, cycle_deadline_ms=10_000,
                          slots={"btc-5m": slot})
    try:
        limit = execution.limit_of(Decision.enter(limit_price=30_000.0, expire_candles=2), timeframe="5m",
                                   close_ms=T0 + TF, close=36_404.0)
        r = execution.send(slot=slot, cfg=slot.config, intent="entry", side="buy", qty=0.003, price=30_000.0,
                           candle_ms=T0 + TF, key="k1", job=None, limit=limit)
        cid = r["client_order_id"]
        assert r["status"] == "open" and fake.orders[cid]["timeInForce"] == "GTC"
        assert execution.resting.poll() == 0
        assert fake.trade_limits("BTCUSDT", 31_000.0) == 0  # above the limit: nothing trades
        assert fake.trade_limits("BTCUSDT", 30_000.0, 0.001) == 1
        assert execution.resting.poll() == 1 and execution.resting.poll() == 0
        order = ledger.order(cid)
        assert (order["status"], order["filled_qty"]) == ("open", pytest.approx(0.001))
        assert slot.position_qty == pytest.approx(0.001)
        assert fake.trade_limits("BTCUSDT", 29_900.0, 0.0005) == 1
        assert execution.resting.poll() == 1
        assert [(f["qty"], f["price"]) for f in ledger.fills("btc-5m")] == [
            (pytest.approx(0.001), 30_000.0), (pytest.approx(0.0005), 30_000.0)]
        assert sum(f["fee"] for f in ledger.fills("btc-5m")) == pytest.approx(0.0015 * 30_000 * 0.001)
        clock.jump(2 * TF)  # past the expiry (T0 + 5m + 2 candles)
        assert execution.resting.poll() == 0
        assert fake.orders[cid]["status"] == "CANCELED"
        order = ledger.order(cid)
        assert (order["status"], order["filled_qty"]) == ("cancelled", pytest.approx(0.0015))
        assert ledger.position("btc-5m").qty == pytest.approx(0.0015)
        assert execution.resting.by_slot() == {}
    finally:
        broker.close()
        ledger.close()
