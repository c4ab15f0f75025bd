"""kernel/gate.py: the halt (atomic with the final pass), deadlines, pauses and the
pre-trade risk limits."""
from __future__ import annotations

import threading

import pytest

from kernel.errors import GateRefused
from kernel.gate import OrderGate
from tests.support.waiting import wait_until

NOW = 1_704_067_200_000


def risk(gate: OrderGate, **kw) -> None:
    args = dict(slot="s", intent="entry", qty=1.0, price=100.0, position_qty=0.0, max_position=None,
                max_notional=1000.0, max_orders_per_minute=6, now_ms=NOW)
    args.update(kw)
    gate.check_risk(**args)


def refused(fn, *a, **kw) -> GateRefused:
    with pytest.raises(GateRefused) as exc:
        fn(*a, **kw)
    return exc.value


def test_halt_refuses_every_strategy_order_but_flatten():
    gate = OrderGate()
    before = gate.pass_order(slot="s", intent="entry", now_ms=NOW)
    observed = gate.engage_halt()
    assert gate.halted and before < observed == gate.halt_observed_ns
    for intent in ("entry", "exit"):
        assert refused(gate.pass_order, slot="s", intent=intent, now_ms=NOW).reason == "halted"
    assert gate.pass_order(slot="s", intent="flatten", now_ms=NOW) > observed
    assert gate.engage_halt() == observed, "a second engage keeps the first observation"
    gate.release_halt()
    assert not gate.halted and gate.halt_observed_ns is None
    gate.pass_order(slot="s", intent="exit", now_ms=NOW)


def test_no_order_passes_after_the_halt_is_observed_under_contention():
    gate = OrderGate()
    passes: list[int] = []
    refusals: list[str] = []

    def trader(i: int) -> None:
        mine: list[str] = []

        def refused_enough() -> bool:  # keep trying well past the halt
            try:
                passes.append(gate.pass_order(slot=f"s{i}", intent="exit", now_ms=NOW))
            except GateRefused as exc:
                refusals.append(exc.reason)
                mine.append(exc.reason)
            return len(mine) >= 200

        wait_until(refused_enough, timeout=30, what=f"trader {i}'s 200 refusals", poll=0)

    threads = [threading.Thread(target=trader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(passes) >= 500, timeout=10, what="500 passes before the halt", poll=0.0005)
    finally:  # the traders stop only once halted
        observed = gate.engage_halt()
        for t in threads:
            t.join()
    assert len(passes) >= 500 and len(refusals) == 800, "both sides of the halt were exercised"
    assert set(refusals) == {"halted"}
    assert max(passes) < observed
    assert gate.passed == len(passes)


def test_a_cycle_past_its_deadline_or_abandoned_is_refused():
    gate = OrderGate()
    assert refused(gate.pass_order, slot="s", intent="exit", now_ms=NOW, deadline_passed=True).reason == "deadline"
    assert refused(gate.pass_order, slot="s", intent="exit", now_ms=NOW, abandoned=True).reason == "deadline"
    assert gate.refused["deadline"] == 2 and gate.passed == 0


def test_pause_stops_entries_not_exits():
    gate = OrderGate()
    assert refused(gate.pass_order, slot="s", intent="entry", now_ms=NOW, entries_allowed=False).reason == "paused"
    gate.pass_order(slot="s", intent="exit", now_ms=NOW, entries_allowed=False)
    assert gate.passed == 1


def test_size_limits_apply_to_entries_only():
    gate = OrderGate()
    risk(gate, qty=5.0, price=100.0, max_notional=1000.0)
    assert refused(risk, gate, qty=11.0, price=100.0).reason == "max_notional"
    assert refused(risk, gate, qty=1.0, position_qty=9.5, price=100.0).reason == "max_notional"
    assert refused(risk, gate, qty=2.0, max_position=1.5).reason == "max_position"
    risk(gate, intent="exit", qty=50.0, position_qty=50.0, max_position=1.0, max_notional=1.0)


def test_rate_limit_counts_passes_over_a_sliding_minute():
    gate = OrderGate()
    for i in range(3):
        risk(gate, max_orders_per_minute=3, now_ms=NOW + i)
        gate.pass_order(slot="s", intent="entry", now_ms=NOW + i)
    assert refused(risk, gate, max_orders_per_minute=3, now_ms=NOW + 10).reason == "rate"
    assert refused(risk, gate, intent="exit", max_orders_per_minute=3, now_ms=NOW + 10).reason == "rate"
    risk(gate, intent="flatten", max_orders_per_minute=3, now_ms=NOW + 10)  # risk-reducing: never rate limited
    risk(gate, slot="other", max_orders_per_minute=3, now_ms=NOW + 10)  # per slot
    risk(gate, max_orders_per_minute=3, now_ms=NOW + 60_001)  # the first pass left the window


def test_orders_in_transit_are_counted_until_settled():
    """The halt's cancel sweep and flush wait for orders that passed just before it."""
    gate = OrderGate()
    assert gate.wait_settled(0.0) is True
    gate.pass_order(slot="s", intent="entry", now_ms=NOW)
    gate.pass_order(slot="s", intent="exit", now_ms=NOW)
    assert gate.in_transit == 2
    assert gate.wait_settled(0.01) is False
    gate.order_settled()
    done = threading.Thread(target=gate.order_settled)
    done.start()
    assert gate.wait_settled(10) is True
    done.join()
    assert gate.in_transit == 0
    with pytest.raises(GateRefused):
        gate.pass_order(slot="s", intent="exit", now_ms=NOW, abandoned=True)
    assert gate.in_transit == 0, "a refused order is never in transit"
