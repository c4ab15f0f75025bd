"""Canary and shadow deploys in a real ``runkernel`` (issue 11): a canary that raises goes back to
the current version by itself (status.json says ``auto_rolled_back`` and why; the ledger shows the
other slot never ran it); a canary that behaves is promoted; a shadow sends no order, reports where
its decisions differed, and is discarded by a rollback."""
from __future__ import annotations

import pytest

from tests.support.strategy_folders import write_strategies
from tests.support.strategy_sources import FLIPFLOP, counter_source, hold_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLOTS = ("a-5m", "b-5m")


def _kernel_with_two_slots(kernels, tmp_path):
    strategies = write_strategies(tmp_path / "strategies", {"__init__": "", "tagged": hold_source(tag="v1", warmup=3)})
    k = kernels(strategies=strategies, demo=False, speed=600, tick_ms=100)
    for sid in SLOTS:
        k.ok("slot.add", sid, {"id": sid, "symbol": "BTC/USDT", "timeframe": "5m", "strategy": "tagged"})
    st = k.wait(lambda s: all(k.slot(s, sid)["last_cycle_version"] for sid in SLOTS), what="a cycle of each slot")
    return k, strategies, st["strategies"]["tagged"]["sha256"]


def _cycles(k, slot: str) -> list[dict]:
    return k.query("SELECT candle_ms, version, sha256, result FROM cycles WHERE slot = ? ORDER BY candle_ms", (slot,))


def test_a_canary_that_raises_is_rolled_back_automatically(kernels, tmp_path):
    k, strategies, v1 = _kernel_with_two_slots(kernels, tmp_path)
    (strategies / "tagged.py").write_text(counter_source(after=2, how='raise RuntimeError(f"canary broke at {n}")'))
    r = k.ok("reload", args={"strategy": "tagged", "slots": ["a-5m"]})  # the default budget: 20 cycles, 1 fault
    assert r["detail"]["result"] == "canary_started", r
    v2 = r["detail"]["new_sha256"]
    st = k.wait(lambda s: (s["strategies"]["tagged"].get("canary") or {}).get("state") == "auto_rolled_back",
                what="the canary rolled back automatically")
    canary = st["strategies"]["tagged"]["canary"]
    assert canary["sha256"] == v2 and canary["slots"] == ["a-5m"] and canary["counts"]["faults"] == 2
    assert "canary broke" in canary["reason"] and canary["budget"] == {"cycles": 20, "faults": 1}
    auto = [x for x in st["reloads"] if x["result"] == "auto_rolled_back"]
    assert len(auto) == 1 and "canary broke" in auto[0]["error"], st["reloads"]
    assert (auto[0]["old_sha256"], auto[0]["new_sha256"], auto[0]["command_id"]) == (v2, v1, r["id"])
    assert st["strategies"]["tagged"]["sha256"] == v1
    st = k.wait(lambda s: k.slot(s, "a-5m")["last_cycle_sha256"] == v1, what="the canary slot back on v1")
    assert k.slot(st, "a-5m")["state"] == "active", "the canary's fault does not outlive it"
    a, b = _cycles(k, "a-5m"), _cycles(k, "b-5m")
    assert [c["result"] for c in a if c["sha256"] == v2].count("fault") == 2
    assert all(c["sha256"] == v1 for c in b), "the other slot never ran the canary"
    assert a[-1]["sha256"] == v1


def test_a_canary_that_behaves_is_promoted(kernels, tmp_path):
    k, strategies, v1 = _kernel_with_two_slots(kernels, tmp_path)
    (strategies / "tagged.py").write_text(hold_source(tag="v2", warmup=3))
    r = k.ok("reload", args={"strategy": "tagged", "slots": ["b-5m"], "budget": {"cycles": 2, "faults": 0}})
    v2 = r["detail"]["new_sha256"]
    k.wait(lambda s: (s["strategies"]["tagged"]["canary"] or {}).get("state") == "passed", what="the canary's budget passed")
    assert all(c["sha256"] == v1 for c in _cycles(k, "a-5m"))
    r = k.ok("promote", args={"strategy": "tagged"})
    assert r["detail"]["result"] == "promoted", r
    st = k.wait(lambda s: all(k.slot(s, sid)["last_cycle_sha256"] == v2 for sid in SLOTS), what="v2 on every slot")
    assert st["strategies"]["tagged"]["sha256"] == v2 and st["strategies"]["tagged"]["canary"]["state"] == "promoted"
    assert [x["result"] for x in st["reloads"]][-2:] == ["canary_started", "promoted"]


def test_a_shadow_sends_no_order_reports_its_differences_and_a_rollback_discards_it(kernels, tmp_path):
    k, strategies, v1 = _kernel_with_two_slots(kernels, tmp_path)
    (strategies / "tagged.py").write_text(FLIPFLOP)  # would enter at once: every live hold differs
    r = k.ok("reload", args={"strategy": "tagged", "shadow": True, "cycles": 3})
    assert r["detail"]["result"] == "shadow_started", r
    v2 = r["detail"]["new_sha256"]
    st = k.wait(lambda s: (s["strategies"]["tagged"]["shadow"] or {}).get("done"), what="the shadow done")
    sh = st["strategies"]["tagged"]["shadow"]
    assert sh["sha256"] == v2 and sh["cycles"] == 3
    for sid in SLOTS:
        p = sh["per_slot"][sid]
        assert p["evaluations"] == 3 and p["differences"] == 3, p
        assert {(d["live"], d["shadow"]) for d in p["last_differences"]} == {("hold", "enter")}
    assert k.query("SELECT COUNT(*) AS n FROM orders")[0]["n"] == 0, "no order from the shadow"
    assert {c["sha256"] for sid in SLOTS for c in _cycles(k, sid)} == {v1}
    r = k.ok("rollback", args={"strategy": "tagged"})
    assert r["detail"]["result"] == "shadow_discarded", r
    st = k.wait(lambda s: s["strategies"]["tagged"]["shadow"] is None, what="the shadow gone")
    assert st["strategies"]["tagged"]["sha256"] == v1 and st["reloads"][-1]["result"] == "shadow_discarded"
