"""Issue 15, item 3: a slot.flatten's order goes out on a cycle worker, not on the tick thread
that applies the command; the lines it logs there still name the command (kernel/log_setup.py)."""
from __future__ import annotations

import logging
import threading

from kernel.brokers.paper import PaperBroker
from kernel.errors import OrderRejected
from tests.support.log_capture import Collect
from tests.kernel.kernel_driver import M5, make_driver


class RefusesSells(PaperBroker):
    """An exchange that takes the entry and rejects the flatten's sell."""

    def place_order(self, req, *, ref_price, now_ms):
        if req.side == "sell":
            raise OrderRejected("sells are closed for the test")
        return super().place_order(req, ref_price=ref_price, now_ms=now_ms)


def test_a_flattens_rejected_order_is_logged_on_a_worker_with_the_commands_id(tmp_path, strategies):
    d = make_driver(tmp_path, strategies, broker_class=RefusesSells)
    handler = Collect()
    kernel_log = logging.getLogger("kernel")
    kernel_log.addHandler(handler)
    try:
        d.add_slot("btc-5m", "flip")
        d.advance(M5)  # enters
        assert d.kernel.ledger.position("btc-5m").qty > 0
        tick_thread = threading.current_thread().name
        handler.records.clear()

        r = d.command("slot.flatten", "btc-5m")

        assert r["detail"]["status"] == "rejected", r
        rejected = [rec for rec in handler.records if "rejected: sells are closed for the test" in rec.getMessage()]
        assert len(rejected) == 1, [rec.getMessage() for rec in handler.records]
        assert rejected[0].threadName != tick_thread  # a cycle worker's line
        assert rejected[0].command_id == r["id"] == "t2-slot.flatten"
    finally:
        kernel_log.removeHandler(handler)
        d.close()
