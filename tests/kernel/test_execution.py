"""The order path (kernel/execution.py) on its own parts: a real ledger, gate and paper
exchange; only the network in front of the exchange is made to fail."""
from __future__ import annotations

import re

import pytest

from kernel.brokers.paper import PaperBroker
from kernel.changes import Changes
from kernel.clock import ManualClock
from kernel.errors import TemporaryError
from kernel.execution import Execution, client_order_id
from kernel.feeds.synthetic import SyntheticFeed
from kernel.gate import OrderGate
from kernel.halt import HaltController
from kernel.ledger import Ledger
from kernel.protocol import SlotConfig
from kernel.run_state import RunState
from kernel.slot_runtime import SlotRuntime
from tests.kernel.kernel_driver import T0


class LostAnswers(PaperBroker):
    """The paper exchange behind a network that loses its answers while ``lose`` is set:
    the order is placed, the kernel hears a timeout."""

    lose = False

    def place_order(self, req, *, ref_price, now_ms):
        order = super().place_order(req, ref_price=ref_price, now_ms=now_ms)
        if self.lose:
            raise TemporaryError("connection reset")
        return order


class Parts:
    def __init__(self, tmp_path) -> None:
        self.ledger = Ledger(tmp_path / "ledger.sqlite3")
        self.broker = LostAnswers(None, cash=10_000.0)
        self.gate = OrderGate()
        self.clock = ManualClock(T0 + 1_000)
        self.run = RunState()
        self.changes = Changes()
        self.halt = HaltController(gate=self.gate, ledger=self.ledger, broker=self.broker, changes=self.changes,
                                   cancel_wait_ms=1_000, settle_timeout_ms=1_000)
        self.execution = Execution(ledger=self.ledger, broker=self.broker, gate=self.gate, clock=self.clock,
                                   feed=SyntheticFeed(seed=7), run_state=self.run, halt=self.halt,
                                   changes=self.changes, cycle_deadline_ms=10_000)
        self.slot = SlotRuntime(config=SlotConfig(id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="flip",
                                                  order_notional=100.0, max_notional=1_000.0))

    def send(self, intent: str, side: str, qty: float, key: str) -> dict:
        return self.execution.send(slot=self.slot, cfg=self.slot.config, intent=intent, side=side, qty=qty,
                                   price=100.0, candle_ms=T0, key=key, job=None)

    def close(self) -> None:
        self.broker.close()
        self.ledger.close()


@pytest.fixture
def parts(tmp_path):
    p = Parts(tmp_path)
    yield p
    p.close()


def test_client_order_ids_are_deterministic_per_slot_key_and_intent():
    cid = client_order_id("btc-5m", "1704067200000", "entry")
    assert cid == client_order_id("btc-5m", "1704067200000", "entry")
    assert re.fullmatch(r"fs[0-9a-f]{30}", cid)
    assert len({cid, client_order_id("btc-5m", "1704067200000", "exit"),
                client_order_id("btc-5m", "1704067500000", "entry"),
                client_order_id("eth-5m", "1704067200000", "entry")}) == 4


def test_an_order_is_recorded_before_it_is_sent_and_never_sent_twice(parts):
    r = parts.send("entry", "buy", 0.5, "k1")
    assert r["status"] == "filled" and r["filled_qty"] == pytest.approx(0.5)
    row = parts.ledger.order(r["client_order_id"])
    assert row["status"] == "filled" and row["passed_ns"] is not None
    assert parts.slot.position_qty == pytest.approx(parts.ledger.position("btc-5m").qty) == pytest.approx(0.5)
    again = parts.send("entry", "buy", 0.5, "k1")
    assert again["status"] == "duplicate"
    assert len(parts.broker.open_orders()) == 0 and len(parts.ledger.orders()) == 1


def test_paused_entries_and_a_halt_are_refused_at_the_gate(parts):
    parts.run.paused = True
    r = parts.send("entry", "buy", 0.5, "k1")
    assert (r["status"], r["reason"]) == ("refused", "paused")
    assert parts.ledger.orders() == []
    parts.run.paused = False
    assert parts.send("entry", "buy", 0.5, "k2")["status"] == "filled"
    parts.run.paused = True
    assert parts.send("exit", "sell", 0.5, "k3")["status"] == "filled", "exits pass while paused"
    parts.run.paused = False
    parts.halt.engage("test", source="a test", tick=1)
    r = parts.send("entry", "buy", 0.5, "k4")
    assert (r["status"], r["reason"]) == ("refused", "halted")
    assert parts.execution.entries_allowed(parts.slot) is False


def test_an_order_in_doubt_is_resolved_before_its_slot_sends_another(parts):
    parts.broker.lose = True
    r = parts.send("entry", "buy", 0.5, "k1")
    assert r["status"] == "unknown"
    assert parts.ledger.order(r["client_order_id"])["status"] == "sent"
    assert parts.execution.unresolved("btc-5m") == {r["client_order_id"]}
    parts.broker.lose = False
    nxt = parts.send("exit", "sell", 0.5, "k2")
    assert (nxt["status"], nxt["reason"]) == ("refused", "resolved")
    assert parts.ledger.order(r["client_order_id"])["status"] == "filled"
    assert parts.execution.unresolved("btc-5m") == set()
    assert parts.slot.position_qty == pytest.approx(0.5), "the lost buy is the slot's position"
    assert parts.send("exit", "sell", 0.5, "k3")["status"] == "filled"


def test_a_flatten_sells_the_whole_position_even_while_halted(parts):
    assert parts.execution.flatten(parts.slot, command_id="c1") == {"note": "no position to flatten", "qty": 0.0}
    parts.send("entry", "buy", 0.5, "k1")
    parts.halt.engage("test", source="a test", tick=1)
    r = parts.execution.flatten(parts.slot, command_id="c2")
    assert r["status"] == "filled" and r["intent"] == "flatten" and "error" not in r
    assert parts.ledger.position("btc-5m").qty == pytest.approx(0.0)
    assert parts.ledger.order(r["client_order_id"])["command_id"] == "c2"


# ------------------------------------------------------------------ market minimums (issue 12, item 2)


def _send(parts, intent: str, side: str, qty: float, price: float, key: str) -> dict:
    return parts.execution.send(slot=parts.slot, cfg=parts.slot.config, intent=intent, side=side, qty=qty,
                                price=price, candle_ms=T0, key=key, job=None)


def test_orders_are_cut_to_the_step_and_those_below_a_minimum_are_refused_never_sent(parts):
    from kernel.brokers import MarketRules

    parts.broker.markets = {"BTC/USDT": MarketRules(amount_min=0.001, amount_step=0.001, cost_min=5.0)}
    small = _send(parts, "entry", "buy", 0.0234567, 100.0, "k1")  # 0.023 x 100 = 2.3 < 5
    assert (small["status"], small["reason"], small["qty"]) == ("refused", "market_minimum", 0.023)
    assert "below the market's minimum order value 5" in small["error"]
    [row] = parts.ledger.orders()
    assert (row["status"], row["qty"]) == ("refused", 0.023) and "minimum order value" in row["error"]
    assert parts.broker.fetch_order(small["client_order_id"]) is None, "never sent"
    tiny = _send(parts, "entry", "buy", 0.0004, 100_000.0, "k2")  # 40 USDT, but less than one step
    assert (tiny["status"], tiny["qty"]) == ("refused", 0.0) and "amount step" in tiny["error"]
    parts.broker.markets["BTC/USDT"] = MarketRules(amount_min=0.01, amount_step=0.001)
    under = _send(parts, "entry", "buy", 0.0049, 100_000.0, "k2b")  # 0.004: under the amount minimum
    assert under["status"] == "refused" and "amount 0.004 below the market's minimum 0.01" in under["error"]
    parts.broker.markets["BTC/USDT"] = MarketRules(amount_min=0.001, amount_step=0.001, cost_min=5.0)

    ok = _send(parts, "entry", "buy", 0.5678, 100.0, "k3")
    assert ok["status"] == "filled" and ok["filled_qty"] == pytest.approx(0.567)
    assert parts.broker.fetch_order(ok["client_order_id"]).qty == 0.567


def test_a_position_that_cannot_be_sold_says_so_once(parts, caplog):
    from kernel.brokers import MarketRules

    parts.broker.markets = {"BTC/USDT": MarketRules(amount_min=0.001, amount_step=0.001, cost_min=5.0)}
    assert _send(parts, "entry", "buy", 0.06, 100.0, "k1")["status"] == "filled"
    caplog.set_level("WARNING", logger="kernel")
    first = _send(parts, "exit", "sell", 0.06, 50.0, "k2")  # 0.06 x 50 x (1 - slippage) < 5
    again = _send(parts, "exit", "sell", 0.06, 48.0, "k3")  # another price, the same situation
    assert first["reason"] == again["reason"] == "market_minimum"
    said = [r for r in caplog.records if "cannot be sold" in r.getMessage()]
    assert len(said) == 1, "said once, not at every cycle"
    assert [o["status"] for o in parts.ledger.orders()] == ["filled", "refused"]  # the repeat left no row
    pos = parts.ledger.position("btc-5m")
    assert pos.qty == pytest.approx(0.06) and "cannot be sold" in pos.unsellable and "2.88" in pos.unsellable
    sold = _send(parts, "exit", "sell", 0.06, 100.0, "k4")  # the price came back: 6 USDT
    assert sold["status"] == "filled"
    pos = parts.ledger.position("btc-5m")
    assert (pos.qty, pos.unsellable, pos.trades) == (0.0, None, 1)
