"""The halt (kernel/halt.py): engaged from control.json at the top of a tick, released only
explicitly, and its cancel sweep and flush waiting for orders already past the gate."""
from __future__ import annotations

import shutil
import threading
import time

from kernel.brokers import OrderRequest
from kernel.brokers.paper import PaperBroker
from kernel.changes import Changes
from kernel.control import atomic_write_json, clear_halt_and_release
from kernel.gate import OrderGate
from kernel.halt import HaltController, HaltState
from kernel.ledger import Ledger
from kernel.protocol import Command, HaltStatus
from tests.kernel.kernel_driver import M5, T0, make_driver
from tests.support.ledger_reader import sqlite_rows


def test_halt_release_resume_in_process(driver):
    driver.add_slot("btc-5m", "flip")
    driver.advance(2 * M5)
    k = driver.kernel
    ran = len(driver.cycles("btc-5m"))
    atomic_write_json(driver.state_dir / "control.json", {"halt": True})
    tick = k.tick
    k.tick_once()
    snap = k.snapshot()
    assert snap["state"] == "halted"
    assert snap["cycles"]["halt_observed_tick"] == tick + 1 == k.tick
    assert k.gate.halted and k.ledger.meta_get("halt")["engaged"] is True
    driver.advance(3 * M5)
    assert len(driver.cycles("btc-5m")) == ran, "no cycle runs while halted"
    r = driver.command("resume")
    assert r["result"] == "rejected" and "release" in r["error"]
    r = driver.command("release")
    assert r["result"] == "rejected" and "still asks for a halt" in r["error"]
    assert k.snapshot()["state"] == "halted"
    clear_halt_and_release(driver.state_dir, Command(id="rel-1", action="release"))
    driver.settle()
    assert driver.result("rel-1")["result"] == "applied"
    assert k.snapshot()["state"] == "paused"
    assert driver.command("resume")["result"] == "applied"
    assert k.snapshot()["state"] == "running"
    driver.advance(2 * M5)
    assert len(driver.cycles("btc-5m")) == ran + 2
    assert driver.slot("btc-5m")["missed_cycles"] == 0, "closes passed while halted are not missed"


class SlowExchange(PaperBroker):
    """The paper exchange behind a slow network: place_order waits for ``wire`` once armed.
    (The exchange is the one thing outside the machine, so it is the one thing slowed.)"""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.wire = threading.Event()
        self.wire.set()
        self.on_the_wire = threading.Event()

    def place_order(self, req, *, ref_price, now_ms):
        self.on_the_wire.set()
        assert self.wire.wait(30), "test never released the exchange"
        return super().place_order(req, ref_price=ref_price, now_ms=now_ms)


def test_the_halt_flushes_the_ledger_after_orders_already_past_the_gate_land(tmp_path, strategies):
    """An order that passed the gate before the halt was observed may still be on its way to
    the exchange. The halt's cancel sweep and ledger flush wait for it (bounded by the cycle
    deadline), so once the halt reports its flush done, the main database file alone holds
    that order and its fill, and its status says filled."""
    d = make_driver(tmp_path, strategies, broker_class=SlowExchange)
    exchange = d.kernel.broker
    try:
        d.add_slot("btc-5m", "flip")
        d.advance(2 * M5)  # enter, exit: flat again
        k = d.kernel
        exchange.wire.clear()
        exchange.on_the_wire.clear()
        d.clock.jump(M5)
        k.tick_once()  # dispatches the cycle: it passes the gate and waits on the wire
        assert exchange.on_the_wire.wait(10)
        atomic_write_json(d.state_dir / "control.json", {"halt": True})
        k.tick_once()  # observes the halt
        assert k.snapshot()["state"] == "halted"
        observed_ns = k.halt.state.observed_ns
        exchange.wire.set()  # the order lands after the halt was observed
        d.tick_until(lambda: k.snapshot()["halt"].get("cancels_pending") is False, timeout=20,
                     what="the halt to finish its cancels and flush")
        copy = tmp_path / "main-file-only.sqlite3"
        shutil.copyfile(d.state_dir / "ledger.sqlite3", copy)
        rows = sqlite_rows(copy, "SELECT client_order_id, status, passed_ns FROM orders WHERE candle_ms=?",
                           (T0 + 3 * M5,))
        fills = sqlite_rows(copy, "SELECT COUNT(*) AS n FROM fills f JOIN orders o USING (client_order_id)"
                                  " WHERE o.candle_ms=?", (T0 + 3 * M5,))[0]["n"]
        assert len(rows) == 1 and rows[0]["status"] == "filled", rows
        assert rows[0]["passed_ns"] < observed_ns, "it passed the gate before the halt"
        assert fills == 1
        d.settle()
    finally:
        exchange.wire.set()
        d.close()


# ------------------------------------------------------------------ HaltState and the controller


def test_a_halt_state_round_trips_and_reports_the_keys_status_json_always_had():
    rest = HaltState()
    assert rest.as_dict() == rest.status() == {"engaged": False, "since": None, "reason": None,
                                               "cancelled_orders": []}
    engaged = HaltState(engaged=True, since="2024-01-01T00:00:00.000Z", reason="operator", cancelled_orders=[],
                        cancel_failed=[], cancels_pending=True, observed_ns=123)
    stored = engaged.as_dict()
    assert list(stored) == ["engaged", "since", "reason", "cancelled_orders", "cancel_failed", "cancels_pending",
                            "observed_ns"]
    assert HaltState.from_dict(stored) == engaged
    assert HaltState.from_dict({**stored, "someday": 1}) == engaged
    assert "observed_ns" not in engaged.status()
    done = HaltState.from_dict({**stored, "cancelled_orders": ["fsabc"], "cancels_pending": False,
                                "flushed_at": "2024-01-01T00:00:01.000Z"})
    assert list(done.status()) == ["engaged", "since", "reason", "cancelled_orders", "cancel_failed",
                                   "cancels_pending", "flushed_at"]
    assert set(done.status()) - set(HaltStatus.model_fields) == {"flushed_at"}
    assert HaltStatus.model_validate(done.status()).cancelled_orders == ["fsabc"]


def test_the_controller_cancels_resting_orders_flushes_and_releases(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    broker = PaperBroker(None, cash=10_000.0)
    gate, changes = OrderGate(), Changes()
    ledger.record_intent(client_order_id="fs-rest", slot="s", symbol="BTC/USDT", candle_ms=None, intent="entry",
                         side="buy", qty=0.01, ref_price=100.0)
    broker.place_order(OrderRequest(client_order_id="fs-rest", symbol="BTC/USDT", side="buy", qty=0.01,
                                    type="limit", limit_price=90.0), ref_price=100.0, now_ms=T0)
    broker.place_order(OrderRequest(client_order_id="human-1", symbol="BTC/USDT", side="buy", qty=0.01,
                                    type="limit", limit_price=80.0), ref_price=100.0, now_ms=T0)
    halt = HaltController(gate=gate, ledger=ledger, broker=broker, changes=changes, cancel_wait_ms=5_000,
                          settle_timeout_ms=1_000)
    try:
        changes.status_urgent = False
        before_ns = time.time_ns()
        halt.engage(None, source="a test", tick=7)
        after_ns = time.time_ns()
        assert gate.halted and halt.engaged and halt.observed_tick == 7 and changes.status_urgent
        # The wall-clock instant of the observation, in status.json: strategy calls compare with it.
        assert before_ns <= halt.state.observed_at_ns == gate.halt_observed_at_ns <= after_ns
        assert HaltStatus.model_validate(halt.state.status()).observed_at_ns == halt.state.observed_at_ns
        assert "observed_ns" not in halt.state.status()
        assert halt.state.reason == "halt requested in a test" and halt.state.cancels_pending is True
        assert ledger.meta_get("halt") == halt.state.as_dict()
        assert halt.start_cancels() is True
        state = halt.state
        assert sorted(state.cancelled_orders) == ["fs-rest", "human-1"] and state.cancel_failed == []
        assert state.cancels_pending is False and state.flushed_at is not None
        assert ledger.order("fs-rest")["status"] == "cancelled"
        assert broker.open_orders() == []
        stored = ledger.meta_get("halt")
        assert stored["cancels_pending"] is False and "flushed_at" not in stored
        released = halt.release()
        assert released == state.as_dict()
        assert not gate.halted and halt.state.as_dict() == {"engaged": False, "since": None, "reason": None,
                                                           "cancelled_orders": []}
        restored = HaltController(gate=OrderGate(), ledger=ledger, broker=broker, changes=changes,
                                  cancel_wait_ms=0, settle_timeout_ms=0)
        restored.restore(stored)
        assert restored.engaged and restored.state == HaltState.from_dict(stored)
    finally:
        broker.close()
        ledger.close()
