"""Issue 15, item 3: lines the kernel logs away from the command's own application still name
the command (kernel/log_setup.py): a canary's automatic rollback names the reload that started
the canary, and a flatten that fails on a cycle worker names the slot.flatten."""
from __future__ import annotations

import logging
import threading

from kernel.brokers.paper import PaperBroker
from tests.support.log_capture import Collect
from tests.kernel.kernel_driver import M5, make_driver
from tests.support.strategy_sources import counter_source

RAISES_FROM_ITS_SECOND_CYCLE = counter_source(after=2, how='raise RuntimeError(f"canary broke at {n}")')


class BrokenOnSells(PaperBroker):
    """An exchange client with a bug: a sell raises what no order path expects."""

    def place_order(self, req, *, ref_price, now_ms):
        if req.side == "sell":
            raise ZeroDivisionError("a bug in the exchange client")
        return super().place_order(req, ref_price=ref_price, now_ms=now_ms)


def collecting():
    handler = Collect()
    logging.getLogger("kernel").addHandler(handler)
    return handler


def test_an_automatic_canary_rollback_is_logged_with_the_canarys_command_id(driver, strategies):
    handler = collecting()
    try:
        driver.add_slot("a-5m", "tagged")
        driver.add_slot("b-5m", "tagged")
        driver.advance(M5)
        (strategies / "tagged.py").write_text(RAISES_FROM_ITS_SECOND_CYCLE)
        r = driver.command("reload", strategy="tagged", slots=["a-5m"], budget={"cycles": 10, "faults": 1})
        assert r["detail"]["result"] == "canary_started", r
        handler.records.clear()
        for _ in range(4):  # cycle 1 behaves, 2 raises (within the budget), 3 raises: rolled back
            driver.advance(M5)
        assert driver.kernel.snapshot()["strategies"]["tagged"]["canary"]["state"] == "auto_rolled_back"

        lines = [rec for rec in handler.records if "rolled back automatically" in rec.getMessage()]
        assert len(lines) == 1, [rec.getMessage() for rec in handler.records]
        assert lines[0].levelno == logging.ERROR
        assert lines[0].command_id == r["id"] == "t3-reload"  # two slot.adds, then the reload
        # Lines of the same stretch that are about no command carry none.
        others = [rec for rec in handler.records if rec is not lines[0] and "canary broke" in rec.getMessage()]
        assert others and all(getattr(rec, "command_id", None) is None for rec in others)
    finally:
        logging.getLogger("kernel").removeHandler(handler)


def test_a_flatten_that_fails_on_a_worker_is_logged_with_the_flattens_command_id(tmp_path, strategies):
    d = make_driver(tmp_path, strategies, broker_class=BrokenOnSells)
    handler = collecting()
    try:
        d.add_slot("btc-5m", "flip")
        d.advance(M5)  # enters
        assert d.kernel.ledger.position("btc-5m").qty > 0
        tick_thread = threading.current_thread().name
        handler.records.clear()

        r = d.command("slot.flatten", "btc-5m")

        assert r["result"] == "rejected" and "ZeroDivisionError" in r["error"], r
        failed = [rec for rec in handler.records if "flatten failed" in rec.getMessage()]
        assert len(failed) == 1, [rec.getMessage() for rec in handler.records]
        assert failed[0].levelno == logging.ERROR and failed[0].exc_info[0] is ZeroDivisionError
        assert failed[0].threadName != tick_thread  # a cycle worker's line
        assert failed[0].command_id == r["id"] == "t2-slot.flatten"
    finally:
        logging.getLogger("kernel").removeHandler(handler)
        d.close()


class SlowSells(PaperBroker):
    """An exchange that takes its time over a sell (a slow network), until the test lets it go."""

    go = threading.Event()

    def place_order(self, req, *, ref_price, now_ms):
        if req.side == "sell":
            assert self.go.wait(30), "the test never let the sell go"
        return super().place_order(req, ref_price=ref_price, now_ms=now_ms)


def test_a_flatten_past_a_cycles_deadline_is_kept_in_flight_and_said_once(tmp_path, strategies):
    """A flatten is an order in progress: it is never abandoned like a stuck cycle (a cycle's
    order could then cross it), and the tick keeps going while it runs."""
    import time

    from kernel.protocol import Command
    from kernel.control import append_commands

    SlowSells.go.clear()
    d = make_driver(tmp_path, strategies, broker_class=SlowSells, cycle_deadline_ms=100)
    handler = collecting()
    try:
        d.add_slot("btc-5m", "flip")
        d.advance(M5)  # enters
        assert d.kernel.ledger.position("btc-5m").qty > 0
        append_commands(d.state_dir, [Command(id="t9-slot.flatten", action="slot.flatten", slot="btc-5m")])
        ends = time.monotonic() + 0.6  # six deadlines of ticks while the sell hangs
        while time.monotonic() < ends:
            d.kernel.tick_once()
            time.sleep(0.01)
        job = d.kernel.slots["btc-5m"].inflight
        assert job is not None and job.meta[0] == "flatten" and not job.abandoned
        assert d.kernel.slots["btc-5m"].fault is None
        said = [rec for rec in handler.records if "flatten still running" in rec.getMessage()]
        assert len(said) == 1 and said[0].command_id == "t9-slot.flatten"
        SlowSells.go.set()
        d.settle()
        assert d.result("t9-slot.flatten")["result"] == "applied"
        assert d.kernel.ledger.position("btc-5m").qty == 0
    finally:
        SlowSells.go.set()
        logging.getLogger("kernel").removeHandler(handler)
        d.close()
