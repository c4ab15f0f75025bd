"""Cycles (kernel/cycles.py), in an in-process kernel: one at every candle close, missed
ones counted, a fault pausing its slot only, deadlines abandoning a stuck cycle."""
from __future__ import annotations

import time

import pytest

from kernel.control import append_commands
from kernel.protocol import Command, ms_to_iso
from tests.kernel.kernel_driver import M5, M15, make_driver
from tests.support.waiting import wait_until


def test_cycles_run_at_every_candle_close_and_trade(driver):
    driver.add_slot("btc-5m", "flip")
    driver.add_slot("eth-5m", "flip", symbol="ETH/USDT")
    driver.add_slot("btc-15m", "flip", timeframe="15m")
    driver.advance(60 * 60_000)  # an hour, in 1-minute steps
    k = driver.kernel
    for slot, tf, n in (("btc-5m", M5, 12), ("eth-5m", M5, 12), ("btc-15m", M15, 4)):
        rows = driver.cycles(slot)
        closes = [r["candle_ms"] for r in rows]
        assert len(closes) == n, (slot, closes)
        assert all(c % tf == 0 for c in closes)
        assert closes == list(range(closes[0], closes[0] + n * tf, tf))
        assert all(r["sha256"] == k.registry.get("flip").sha256 for r in rows)
        s = driver.slot(slot)
        assert (s["cycles"], s["missed_cycles"], s["state"]) == (n, 0, "active")
    orders = k.ledger.orders()
    assert len(orders) == 12 + 12 + 4, "flip orders every cycle"
    assert {o["status"] for o in orders} == {"filled"}
    assert all(o["passed_ns"] for o in orders)
    for slot, pos in k.ledger.positions().items():
        net = sum(f["qty"] if f["side"] == "buy" else -f["qty"] for f in k.ledger.fills(slot))
        assert pos.qty == pytest.approx(net, abs=1e-12)
        assert driver.slot(slot)["position"]["qty"] == pytest.approx(pos.qty)


def test_a_late_tick_is_counted_as_missed_cycles(driver):
    driver.add_slot("btc-5m", "flip")
    driver.advance(M5)
    before = len(driver.cycles("btc-5m"))
    driver.clock.jump(3 * M5)  # the tick loop slept through two closes
    driver.settle()
    s = driver.slot("btc-5m")
    assert s["missed_cycles"] == 2
    assert driver.kernel.snapshot()["cycles"]["missed"] == 2
    assert len(driver.cycles("btc-5m")) == before + 1


@pytest.mark.parametrize("strategy, words", [
    ("raiser", "evaluate raised RuntimeError: bad cycle 3"),
    ("hoarder", "module-level state"),
])
def test_a_runtime_fault_pauses_its_slot_only(driver, strategy, words):
    driver.add_slot("bad", strategy)
    driver.add_slot("good", "flip", symbol="ETH/USDT")
    driver.advance(2 * M5)
    assert driver.slot("bad")["fault"] is None
    driver.advance(M5)
    bad = driver.slot("bad")
    assert bad["state"] == "paused" and words in bad["fault"]
    assert driver.cycles("bad")[-1]["result"] == "fault"
    good_before = len(driver.cycles("good"))
    driver.advance(2 * M5)
    assert len(driver.cycles("good")) == good_before + 2
    good = driver.slot("good")
    assert good["state"] == "active" and good["fault"] is None


def test_a_cycle_past_its_deadline_is_abandoned_and_its_orders_refused(tmp_path, strategies):
    d = make_driver(tmp_path, strategies, cycle_deadline_ms=200)
    try:
        d.add_slot("slow", "sleeper")
        d.add_slot("good", "flip", symbol="ETH/USDT")
        d.advance(M5)  # n=1: enters
        assert d.kernel.ledger.position("slow").qty > 0
        d.clock.jump(M5)  # n=2: sleeps 0.8 s, then wants to exit
        k = d.kernel
        k.tick_once()
        d.tick_until(lambda: d.slot("slow")["fault"] is not None, timeout=10,
                     what="the stuck cycle to fault its slot")
        slow = d.slot("slow")
        assert slow["state"] == "paused" and "deadline" in slow["fault"]
        d.settle()  # the stuck strategy comes back: its exit must not pass
        hung = d.cycles("slow")[-1]
        assert hung["result"].startswith("abandoned")
        orders = [o for o in k.ledger.orders(slot="slow") if o["candle_ms"] == hung["candle_ms"]]
        assert [(o["intent"], o["status"]) for o in orders] == [("exit", "refused")]
        assert "deadline" in orders[0]["error"]
        assert orders[0]["passed_ns"] is None
        assert k.ledger.position("slow").qty > 0, "the refused exit did not trade"
        assert d.slot("good")["fault"] is None
    finally:
        d.close()


def test_an_abandoned_cycle_stays_abandoned_when_a_flatten_takes_its_place(tmp_path, strategies):
    """The usual reaction to a stuck strategy is slot.flatten, which starts as soon as the stuck
    cycle returns, before the tick folds that cycle's outcome in. The outcome must still count
    as abandoned: its decision refused, its state not kept."""
    d = make_driver(tmp_path, strategies, cycle_deadline_ms=200)
    try:
        d.add_slot("slow", "sleeper")
        d.advance(M5)  # n=1: enters
        k = d.kernel
        assert k.ledger.position("slow").qty > 0
        d.clock.jump(M5)
        k.tick_once()  # n=2: sleeps 0.8 s
        stuck = k.slots["slow"].inflight
        assert stuck is not None and stuck.meta[0] == "cycle"
        started = time.monotonic()
        d.tick_until(lambda: stuck.abandoned, timeout=10, what="the stuck cycle to be abandoned")
        append_commands(d.state_dir, [Command(id="flat-1", action="slot.flatten", slot="slow")])
        k.tick_once()  # the flatten waits for the stuck cycle, then takes the slot at once
        assert stuck.done.wait(10)
        # Whatever is left of the 20 s both waits share.
        wait_until(lambda: k.slots["slow"].inflight is not stuck, timeout=started + 20 - time.monotonic(),
                   what="the flatten to take the slot from the stuck cycle", poll=0.005)
        d.settle()
        assert d.result("flat-1")["result"] == "applied"
        row = [c for c in d.cycles("slow") if c["candle_ms"] == stuck.meta[1]][0]
        assert row["result"].startswith("abandoned"), row
        assert k.slots["slow"].strategy_state == {"n": 1}, "an abandoned cycle's state is not kept"
        assert k.ledger.position("slow").qty == 0, "the flatten sold"
    finally:
        d.close()


def test_a_cycle_queued_before_a_halt_and_started_after_it_runs_no_strategy_code(driver):
    """Its result is ``halted``: recorded, no state change, no order, no strategy call."""
    from kernel.control import atomic_write_json
    from kernel.cycles import HALTED

    driver.add_slot("btc-5m", "flip")
    driver.advance(M5)
    k = driver.kernel
    slot = k.slots["btc-5m"]
    orders, state = len(k.ledger.orders()), dict(slot.strategy_state)
    atomic_write_json(driver.state_dir / "control.json", {"halt": True})
    k.tick_once()
    assert k.gate.halted
    called = []
    flip = k.registry.get("flip")
    flip.evaluate = lambda ctx: called.append(ctx)  # would record any strategy call
    close = slot.last_cycle_ms + M5
    # As dispatch_due queued it before the halt: the worker picks it up after.
    slot.inflight = k.cycles.pool.submit(k.cycles.run_cycle, slot.config, close, dict(slot.strategy_state),
                                         slot.state_schema, key=slot.id, meta=("cycle", close))
    driver.settle()
    last = driver.cycles("btc-5m")[-1]
    assert (last["candle_ms"], last["result"]) == (close, HALTED) and "halted" in last["reason"]
    assert called == [] and len(k.ledger.orders()) == orders and slot.strategy_state == state
    snap = k.snapshot()
    assert snap["cycles"]["halted"] == 1 and snap["halt"]["observed_at_ns"] > 0


class _GappyFeed:
    """The synthetic feed without the candles that open at ``gaps`` (a feed gap)."""

    def __init__(self, gaps: set[int]) -> None:
        from kernel.feeds.synthetic import SyntheticFeed

        self._inner = SyntheticFeed(seed=7)
        self.gaps = gaps

    def candles(self, symbol, timeframe, end_close_ms, limit):
        return [c for c in self._inner.candles(symbol, timeframe, end_close_ms, limit) if c.ts not in self.gaps]

    def last_price(self, symbol, at_ms):
        return self._inner.last_price(symbol, at_ms)


def test_a_cycle_without_its_candle_is_skipped_with_the_reason_and_evaluate_is_never_called(tmp_path, strategies):
    from kernel.cycles import SKIPPED
    from kernel.brokers.paper import PaperBroker
    from kernel.kernel import Kernel, KernelOptions
    from tests.kernel.kernel_driver import Driver

    feed = _GappyFeed(set())

    class GappyDriver(Driver):
        def _build(self) -> Kernel:
            opts = KernelOptions(state_dir=self.state_dir, strategies_dir=self.strategies, workers=4)
            return Kernel(opts, clock=self.clock, feed=feed,
                          broker=PaperBroker(self.state_dir / "paper-exchange.sqlite3", cash=100_000.0))

    d = GappyDriver(tmp_path / "state", strategies)
    try:
        d.add_slot("btc-5m", "flip")
        d.advance(2 * M5)
        k = d.kernel
        slot = k.slots["btc-5m"]
        ran = d.cycles("btc-5m")
        assert [r["result"] for r in ran] and SKIPPED not in {r["result"] for r in ran}
        seen: list[tuple] = []
        flip = k.registry.get("flip")
        real = flip.evaluate
        close = slot.last_cycle_ms + M5
        feed.gaps.add(close - M5)  # the candle of the next close never arrives
        orders, state, price = len(k.ledger.orders()), dict(slot.strategy_state), slot.last_price

        def raising(ctx):
            raise AssertionError("evaluate called on a stale window")

        flip.evaluate = raising
        d.advance(M5)
        last = d.cycles("btc-5m")[-1]
        assert (last["candle_ms"], last["result"]) == (close, SKIPPED), last
        assert last["reason"].startswith(f"no candle closing at {ms_to_iso(close)} (BTC/USDT 5m)"), last
        assert f"the feed's newest closes at {ms_to_iso(close - M5)}" in last["reason"]
        assert len(k.ledger.orders()) == orders and slot.strategy_state == state and slot.last_price == price
        s = d.slot("btc-5m")
        assert s["fault"] is None and s["state"] == "active", "a gap is not a fault: the next candle runs"
        assert k.snapshot()["cycles"]["skipped"] == 1

        flip.evaluate = lambda ctx: seen.append((ctx.now_ms, ctx.candle_ms, ctx.candles[-1].ts)) or real(ctx)
        d.advance(M5)  # the next candle is there again: evaluated, told which candle it is for
        assert seen == [(close + M5, close, close)]
        assert d.cycles("btc-5m")[-1]["result"] != SKIPPED
    finally:
        d.close()
