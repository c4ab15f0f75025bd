"""Startup reconciliation (kernel/reconcile.py) against a real paper exchange and ledger."""
from __future__ import annotations

import pytest

from kernel.brokers import OrderRequest
from kernel.brokers.paper import PaperBroker
from kernel.changes import Changes
from kernel.errors import TemporaryError
from kernel.ledger import Ledger
from kernel.protocol import SlotConfig
from kernel.reconcile import reconcile, reconcile_summary
from kernel.slot_runtime import SlotRuntime
from tests.kernel.kernel_driver import T0


class Unreachable(PaperBroker):
    def fetch_order(self, client_order_id):
        raise TemporaryError("network unreachable")


def _intent(ledger: Ledger, cid: str, *, sent: bool) -> None:
    ledger.record_intent(client_order_id=cid, slot="btc-5m", symbol="BTC/USDT", candle_ms=T0, intent="entry",
                         side="buy", qty=0.5, ref_price=100.0)
    if sent:
        ledger.mark_order(cid, "sent")


@pytest.fixture
def slots():
    return {"btc-5m": SlotRuntime(config=SlotConfig(id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="flip"))}


def test_the_ledger_is_brought_to_what_the_broker_says(tmp_path, slots):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    broker = PaperBroker(None, cash=10_000.0)
    try:
        _intent(ledger, "fs-never", sent=False)
        _intent(ledger, "fs-filled", sent=True)
        broker.place_order(OrderRequest(client_order_id="fs-filled", symbol="BTC/USDT", side="buy", qty=0.5),
                           ref_price=100.0, now_ms=T0)
        broker.place_order(OrderRequest(client_order_id="human-1", symbol="BTC/USDT", side="buy", qty=0.1,
                                        type="limit", limit_price=50.0), ref_price=100.0, now_ms=T0)
        changes = Changes()
        changes.status_urgent = False
        found = reconcile(ledger=ledger, broker=broker, slots=slots, changes=changes)
        assert (found["checked"], found["filled"], found["never_sent"], found["fills_recorded"]) == (2, 1, 1, 1)
        assert found["unknown_open_orders"] == 1 and found["broker_only_orders"][0]["client_order_id"] == "human-1"
        assert found["position_mismatches"] == [] and found["errors"] == []
        assert found["summary"] == ("2 unfinished order(s) checked with the broker; 1 filled; "
                                    "1 never sent (abandoned); 1 missing fill(s) recorded; "
                                    "1 open order(s) at the broker unknown to the ledger")
        assert ledger.order("fs-never")["status"] == "abandoned"
        assert ledger.order("fs-filled")["status"] == "filled"
        assert slots["btc-5m"].position_qty == pytest.approx(0.5)
        assert changes.status_urgent and slots["btc-5m"].fault is None
    finally:
        broker.close()
        ledger.close()


def test_an_order_the_broker_cannot_tell_pauses_its_slot(tmp_path, slots):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    broker = Unreachable(None, cash=10_000.0)
    try:
        _intent(ledger, "fs-a", sent=True)
        _intent(ledger, "fs-b", sent=True)
        changes = Changes()
        found = reconcile(ledger=ledger, broker=broker, slots=slots, changes=changes)
        assert (found["checked"], found["unknown"]) == (2, 2)
        assert found["errors"] == ["broker unreachable: TemporaryError: network unreachable"]
        assert "could not be reconciled at startup" in slots["btc-5m"].fault
        assert changes.dirty_slots == {"btc-5m"}
        assert ledger.order("fs-a")["status"] == "sent", "left as it was: its fate is unknown"
    finally:
        broker.close()
        ledger.close()


def test_the_summary_names_positions_the_account_does_not_hold():
    found = {"checked": 0, "fills_recorded": 0, "unknown_open_orders": 0, "errors": ["x"],
             "position_mismatches": [{"currency": "BTC", "ledger": 0.5, "broker": 0.25}]}
    assert reconcile_summary(found) == ("0 unfinished order(s) checked with the broker; 0 missing fill(s) recorded; "
                                        "ledger positions not held at the broker: BTC 0.5 > 0.25; x")
