"""Through ccxt's real Binance class (recorded payloads, fake socket: tests/kernel/ccxt_http.py):
the market's minimums come from ``load_markets``; an order final before its trades are
published is kept "final, trades pending" and booked once they are; a fee charged in BNB is
converted at BNB's price and recorded with the rate used."""
from __future__ import annotations

import pytest

from kernel.brokers import MarketRules
from kernel.brokers.ccxt_broker import CcxtBroker
from kernel.changes import Changes
from kernel.clock import ManualClock
from kernel.credentials import Credentials
from kernel.execution import Execution
from kernel.feeds.synthetic import SyntheticFeed
from kernel.gate import OrderGate
from kernel.halt import HaltController
from kernel.ledger import Ledger
from kernel.order_sync import record_broker_order
from kernel.protocol import SlotConfig
from kernel.run_state import RunState
from kernel.slot_runtime import SlotRuntime
from tests.kernel.ccxt_http import FakeBinance
from tests.kernel.test_ccxt_broker import BINANCE_KEY, BINANCE_SECRET, _client, buy
from tests.support.waiting import wait_until

T0 = 1_699_999_800_000


class Parts:
    def __init__(self, tmp_path, fake: FakeBinance) -> None:
        self.fake = fake
        client = _client("binance", fake, Credentials("binance", "test", BINANCE_KEY, BINANCE_SECRET))
        self.broker = CcxtBroker(client, retry_budget_s=2.0, fill_wait_s=0.2, dead_man_switch=False)
        self.ledger = Ledger(tmp_path / "ledger.sqlite3")
        self.broker.use_ledger(self.ledger)
        gate, changes = OrderGate(), Changes()
        halt = HaltController(gate=gate, ledger=self.ledger, broker=self.broker, changes=changes,
                              cancel_wait_ms=1_000, settle_timeout_ms=1_000)
        self.execution = Execution(ledger=self.ledger, broker=self.broker, gate=gate, clock=ManualClock(T0),
                                   feed=SyntheticFeed(seed=7), run_state=RunState(), halt=halt, changes=changes,
                                   cycle_deadline_ms=10_000)
        self.slot = SlotRuntime(config=SlotConfig(id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="flip",
                                                  order_notional=100.0, max_notional=1_000.0))

    def send(self, key: str, qty: float = 0.00275, price: float = 36_400.0) -> dict:
        return self.execution.send(slot=self.slot, cfg=self.slot.config, intent="entry", side="buy", qty=qty,
                                   price=price, candle_ms=T0, key=key, job=None)

    def close(self) -> None:
        self.execution.pending_trades.close()
        self.broker.close()
        self.ledger.close()


@pytest.fixture
def parts(tmp_path):
    p = Parts(tmp_path, FakeBinance(balances={"BNB": 1.0}))
    yield p
    p.close()


def _posts(fake: FakeBinance) -> int:
    return len(fake.requests_to("POST", "/api/v3/order"))


def test_the_markets_minimums_come_from_load_markets_and_are_checked_before_sending(parts):
    # Binance's recorded exchangeInfo: LOT_SIZE step and minimum 0.00001, NOTIONAL minimum 5.
    assert parts.broker.market_rules("BTC/USDT") == MarketRules(amount_min=1e-5, amount_step=1e-5, cost_min=5.0)
    refused = parts.send("k1", qty=0.0001)  # 3.64 USDT
    assert refused["status"] == "refused" and "minimum order value 5" in refused["error"]
    assert _posts(parts.fake) == 0, "never sent"
    assert parts.ledger.orders()[0]["status"] == "refused"


def test_an_order_final_before_its_trades_are_published_is_booked_once_they_are(parts):
    parts.fake.publish_trades = False
    first = parts.send("k1")
    assert first["status"] == "filled" and _posts(parts.fake) == 1
    [order] = parts.ledger.orders()
    assert (order["status"], order["trades_pending"], order["filled_qty"]) == ("filled", 1, 0.0)
    assert parts.ledger.fills() == [], "not booked as one fill with fee 0"
    assert parts.ledger.summary()["trades_pending"] == 1

    again = parts.send("k2")  # the slot's position is unknown: no new order
    assert (again["status"], again["reason"]) == ("refused", "trades_pending") and _posts(parts.fake) == 1

    parts.fake.publish()
    resolved = parts.send("k3")
    assert (resolved["status"], resolved["reason"]) == ("refused", "resolved") and _posts(parts.fake) == 1
    # By hand from the exchange's trades: BTC fees taken off the quantity, priced at the trade's price.
    [trades] = parts.fake.trades.values()
    fills = parts.ledger.fills()
    assert [f["fill_id"] for f in fills] == [f"{t['orderId']}:{t['id']}" for t in trades]
    assert [f["fee"] for f in fills] == pytest.approx([float(t["commission"]) * float(t["price"]) for t in trades])
    assert [f["fee_currency"] for f in fills] == ["BTC", "BTC"]
    held = sum(float(t["qty"]) - float(t["commission"]) for t in trades)
    assert parts.ledger.position("btc-5m").qty == pytest.approx(held)
    assert parts.slot.position_qty == pytest.approx(held)
    assert parts.ledger.order(order["client_order_id"])["trades_pending"] == 0
    assert parts.ledger.summary()["trades_pending"] == 0


def test_a_fee_in_bnb_is_converted_at_bnbs_price_and_the_conversion_recorded(parts):
    parts.fake.fee_asset = "BNB"
    bo = parts.broker.place_order(buy("fs" + "1" * 30), ref_price=36_400.0, now_ms=T0)
    [trades] = parts.fake.trades.values()
    # By hand: 0.1 % of each trade's value, charged in BNB at 250 USDT, is that many USDT again.
    assert [f.charged_currency for f in bo.fills] == ["BNB", "BNB"]
    assert [f.charged_fee for f in bo.fills] == [float(t["commission"]) for t in trades]
    assert [f.fee_rate_used for f in bo.fills] == [250.0, 250.0]
    assert [f.fee for f in bo.fills] == pytest.approx([float(t["commission"]) * 250.0 for t in trades])
    # (to 1e-5 USDT: Binance prints a commission to 8 decimals of BNB, 2.5e-6 USDT at 250)
    value = sum(float(t["qty"]) * float(t["price"]) for t in trades)
    assert sum(f.fee for f in bo.fills) == pytest.approx(0.001 * value, abs=1e-5)
    assert sum(f.qty for f in bo.fills) == pytest.approx(0.00275), "a fee paid in BNB leaves the quantity whole"

    parts.ledger.record_intent(client_order_id=bo.client_order_id, slot="btc-5m", symbol="BTC/USDT", candle_ms=T0,
                               intent="entry", side="buy", qty=0.00275, ref_price=36_400.0)
    record_broker_order(ledger=parts.ledger, client_order_id=bo.client_order_id, order=bo)
    rows = parts.ledger.fills()
    assert [(r["fee_currency"], r["fee_rate_used"]) for r in rows] == [("BNB", 250.0), ("BNB", 250.0)]
    assert [r["fee_native"] for r in rows] == [float(t["commission"]) for t in trades]
    assert parts.ledger.position("btc-5m").fees == pytest.approx(sum(f.fee for f in bo.fills))
    assert parts.ledger.position("btc-5m").realized_pnl == pytest.approx(-sum(f.fee for f in bo.fills))


def test_a_restart_books_the_trades_an_order_was_still_waiting_for(parts):
    from kernel.reconcile import reconcile

    parts.fake.publish_trades = False
    cid = "fs" + "2" * 30  # placed by the kernel that stopped before its trades were published
    parts.ledger.record_intent(client_order_id=cid, slot="btc-5m", symbol="BTC/USDT", candle_ms=T0,
                               intent="entry", side="buy", qty=0.00275, ref_price=36_400.0)
    bo = parts.broker.place_order(buy(cid), ref_price=36_400.0, now_ms=T0)
    record_broker_order(ledger=parts.ledger, client_order_id=cid, order=bo)
    assert parts.ledger.summary()["trades_pending"] == 1 and parts.ledger.fills() == []
    parts.fake.publish()
    found = reconcile(ledger=parts.ledger, broker=parts.broker, slots={"btc-5m": parts.slot}, changes=Changes())
    assert (found["checked"], found["fills_recorded"]) == (1, 2)
    assert parts.ledger.summary()["trades_pending"] == 0 and len(parts.ledger.fills()) == 2
    [trades] = parts.fake.trades.values()
    assert parts.slot.position_qty == pytest.approx(sum(float(t["qty"]) - float(t["commission"]) for t in trades))


def test_pending_trades_are_looked_up_in_the_background_and_the_next_order_waits_a_cycle(parts):
    parts.fake.publish_trades = False
    assert parts.send("k1")["trades_pending"] is True
    assert parts.slot.position_qty == 0.0
    parts.fake.publish()
    wait_until(lambda: parts.slot.position_qty > 0, timeout=10,
               what="the trades booked by the trades-pending thread, and the slot's position refreshed")
    [trades] = parts.fake.trades.values()
    held = sum(float(t["qty"]) - float(t["commission"]) for t in trades)
    assert parts.slot.position_qty == pytest.approx(held) == parts.ledger.position("btc-5m").qty
    assert parts.ledger.summary()["trades_pending"] == 0
    assert len(parts.fake.requests_to("GET", "/api/v3/myTrades")) >= 2, "looked up again"
    # The cycle that wants the next order decided before the trades were booked: refused once.
    assert parts.send("k2")["reason"] == "resolved"
    assert parts.send("k3")["status"] == "filled" and _posts(parts.fake) == 2
