"""The broker interface (kernel/brokers/__init__.py): required order methods, and optional
hooks whose defaults say what a broker without them means."""
from __future__ import annotations

import pytest

from kernel.brokers import Broker, OrderRequest
from kernel.brokers.paper import PaperBroker


class Minimal(Broker):
    name = "minimal"

    def balances(self) -> dict[str, float]:
        return {"USDT": 12.5}


def test_the_hooks_default_to_doing_nothing():
    b = Minimal()
    assert b.use_ledger(object()) is None
    assert b.on_tick() is None
    assert b.dust_qty("BTC/USDT") == 0.0
    assert b.cached_balances() == {"USDT": 12.5}
    assert b.describe() == {"name": "minimal"}


def test_the_order_methods_must_be_written():
    b = Minimal()
    with pytest.raises(NotImplementedError):
        b.place_order(OrderRequest(client_order_id="c", symbol="BTC/USDT", side="buy", qty=1.0),
                      ref_price=1.0, now_ms=0)
    for call in (lambda: b.fetch_order("c"), lambda: b.cancel_order("c"), b.open_orders, b.close,
                 lambda: b.mark_price("BTC/USDT", 1.0, 0)):
        with pytest.raises(NotImplementedError):
            call()


def test_the_paper_broker_is_a_broker_with_the_default_hooks():
    with PaperBroker(None, cash=100.0) as b:
        assert isinstance(b, Broker)
        assert b.describe() == {"name": "paper"}
        assert b.cached_balances() == b.balances() == {"USDT": 100.0}
        assert b.dust_qty("BTC/USDT") == 0.0
