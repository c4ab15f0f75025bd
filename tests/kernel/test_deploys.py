"""Canary and shadow deploys (kernel/canary.py, kernel/shadow.py, kernel/deploys.py) in an
in-process kernel: a canary that raises goes back by itself, one that behaves is promoted, a
rollback ends one; a shadow sends no order, reports where it differed, is promoted or discarded;
bad input is refused and changes nothing; nothing of it runs during a halt."""
from __future__ import annotations

from kernel.protocol import Status
from tests.kernel.kernel_driver import M5
from tests.support.strategy_sources import FLIPFLOP, counter_source, tagged_hold_source

RAISES_FROM_ITS_SECOND_CYCLE = counter_source(after=2, how='raise RuntimeError(f"canary broke at {n}")')


def _two_slots(driver) -> str:
    driver.add_slot("a-5m", "tagged")
    driver.add_slot("b-5m", "tagged")
    driver.advance(M5)
    return driver.kernel.registry.get("tagged").sha256


def _shas(driver, slot: str) -> list[str]:
    return [c["sha256"] for c in driver.cycles(slot)]


def test_a_canary_that_raises_goes_back_by_itself_and_the_other_slots_never_ran_it(driver, strategies):
    v1 = _two_slots(driver)
    (strategies / "tagged.py").write_text(RAISES_FROM_ITS_SECOND_CYCLE)
    r = driver.command("reload", strategy="tagged", slots=["a-5m"], budget={"cycles": 10, "faults": 1})
    assert r["result"] == "applied" and r["detail"]["result"] == "canary_started", r
    k = driver.kernel
    v2 = r["detail"]["new_sha256"]
    assert v2 != v1 and k.registry.get("tagged").sha256 == v1, "the current version is unchanged"
    st = k.snapshot()
    assert st["strategies"]["tagged"]["canary"]["state"] == "running"
    assert driver.slot("a-5m")["strategy_sha256"] == v2 and driver.slot("b-5m")["strategy_sha256"] == v1
    for _ in range(4):  # cycle 1 behaves, 2 raises (within the budget of 1 fault), 3 raises: back
        driver.advance(M5)
    st = k.snapshot()
    Status.model_validate(st)  # the protocol's models hold a canary and the new results
    canary = st["strategies"]["tagged"]["canary"]
    assert canary["state"] == "auto_rolled_back", canary
    assert canary["counts"]["faults"] == 2 and "canary broke" in canary["reason"], canary
    auto = [x for x in st["reloads"] if x["result"] == "auto_rolled_back"]
    assert len(auto) == 1 and "canary broke" in auto[0]["error"] and auto[0]["old_sha256"] == v2
    assert auto[0]["new_sha256"] == v1 and auto[0]["command_id"] == r["id"]
    assert v2 not in _shas(driver, "b-5m"), "a slot outside the canary never ran it"
    a = _shas(driver, "a-5m")
    assert a.count(v2) == 3 and a[-1] == v1, "the canary slot ran it three times, then the current version"
    assert driver.slot("a-5m")["state"] == "active", "the canary's fault does not outlive it"
    assert driver.slot("a-5m")["strategy_sha256"] == v1 and "tagged" not in k.registry.canary
    r = driver.command("promote", strategy="tagged")
    assert r["result"] == "rejected" and "nothing to promote" in r["error"]


def test_a_canary_that_behaves_passes_its_budget_and_is_promoted(driver, strategies):
    v1 = _two_slots(driver)
    (strategies / "tagged.py").write_text(tagged_hold_source(tag="v2"))
    r = driver.command("reload", strategy="tagged", slots=["a-5m"], budget={"cycles": 2})
    assert r["detail"]["result"] == "canary_started", r
    v2 = r["detail"]["new_sha256"]
    driver.advance(M5)
    driver.advance(M5)
    k = driver.kernel
    canary = k.snapshot()["strategies"]["tagged"]["canary"]
    assert canary["state"] == "passed" and canary["counts"] == {"cycles": 2, "faults": 0}
    assert canary["budget"] == {"cycles": 2, "faults": 1} and canary["slots"] == ["a-5m"]
    assert driver.cycles("a-5m")[-1]["reason"] == "v2|v1" and driver.cycles("b-5m")[-1]["reason"] == "v1|v1"
    r = driver.command("promote", strategy="tagged")
    assert r["result"] == "applied" and r["detail"]["result"] == "promoted", r
    st = k.snapshot()
    assert st["strategies"]["tagged"]["sha256"] == v2 and st["strategies"]["tagged"]["previous"]["sha256"] == v1
    assert st["strategies"]["tagged"]["canary"]["state"] == "promoted"
    driver.advance(M5)
    assert _shas(driver, "a-5m")[-1] == v2 and _shas(driver, "b-5m")[-1] == v2, "every slot runs it now"


def test_rollback_ends_a_canary(driver, strategies):
    v1 = _two_slots(driver)
    (strategies / "tagged.py").write_text(tagged_hold_source(tag="v2"))
    assert driver.command("reload", strategy="tagged", slots=["b-5m"])["result"] == "applied"
    driver.advance(M5)
    assert driver.cycles("b-5m")[-1]["reason"] == "v2|v1"
    r = driver.command("rollback", strategy="tagged")
    assert r["result"] == "applied" and r["detail"]["result"] == "canary_rolled_back", r
    assert driver.kernel.snapshot()["strategies"]["tagged"]["canary"]["state"] == "rolled_back"
    driver.advance(M5)
    assert _shas(driver, "b-5m")[-1] == v1 and driver.kernel.registry.get("tagged").sha256 == v1


def test_bad_canary_shadow_and_promote_input_is_refused_and_changes_nothing(driver, strategies):
    v1 = _two_slots(driver)
    driver.add_slot("c-5m", "flip")
    (strategies / "tagged.py").write_text(tagged_hold_source(tag="v2"))
    k = driver.kernel
    refused = {
        "unknown slot 'zz'": dict(strategy="tagged", slots=["zz"]),
        "slot c-5m runs flip, not tagged": dict(strategy="tagged", slots=["c-5m"]),
        "non-empty list": dict(strategy="tagged", slots=[]),
        "budget.faults": dict(strategy="tagged", slots=["a-5m"], budget={"faults": -1}),
        "not both": dict(strategy="tagged", slots=["a-5m"], shadow=True),
        "needs args.strategy": dict(slots=["a-5m"]),
        "args.cycles goes with args.shadow": dict(strategy="tagged", cycles=3),
    }
    for expected, args in refused.items():
        r = driver.command("reload", **args)
        assert r["result"] == "rejected" and expected in r["error"], (args, r)
    assert not k.registry.canary and not k.registry.shadow and k.registry.get("tagged").sha256 == v1
    r = driver.command("promote", strategy="tagged")
    assert r["result"] == "rejected" and "nothing to promote" in r["error"]
    assert driver.command("reload", strategy="tagged", slots=["a-5m"])["result"] == "applied"
    for args in (dict(strategy="tagged", slots=["b-5m"]), dict(strategy="tagged", shadow=True),
                 dict(strategy="tagged"), {}):
        r = driver.command("reload", **args)
        assert r["result"] == "rejected" and "a canary of tagged runs" in r["error"], (args, r)
    r = driver.command("rollback", strategy="tagged", version=1)
    assert r["result"] == "rejected" and "a canary or shadow of tagged runs" in r["error"]
    assert k.registry.canary["tagged"].slots == frozenset({"a-5m"}) and k.registry.get("tagged").sha256 == v1


def _wait_shadow(driver, slot: str, evaluations: int) -> dict:
    def seen():
        sh = driver.kernel.snapshot()["strategies"]["tagged"]["shadow"]
        return sh if sh["per_slot"][slot]["evaluations"] >= evaluations else None
    return driver.tick_until(seen, timeout=20, what=f"{evaluations} shadow evaluations of {slot}")


def test_a_shadow_sends_no_order_reports_its_differences_and_is_promoted(driver, strategies):
    v1 = _two_slots(driver)
    (strategies / "tagged.py").write_text(FLIPFLOP)  # enters when flat: every live hold differs
    r = driver.command("reload", strategy="tagged", shadow=True, cycles=3)
    assert r["result"] == "applied" and r["detail"]["result"] == "shadow_started", r
    v2 = r["detail"]["new_sha256"]
    for _ in range(4):
        driver.advance(M5)
    sh = _wait_shadow(driver, "a-5m", 3)
    sh = _wait_shadow(driver, "b-5m", 3)
    assert Status.model_validate(driver.kernel.snapshot()).strategies["tagged"].shadow.done
    a = sh["per_slot"]["a-5m"]
    assert a["evaluations"] == 3 and a["differences"] == 3 and a["done"], a
    last = a["last_differences"][-1]
    assert (last["live"], last["shadow"]) == ("hold", "enter") and last["candle"].endswith("Z")
    assert sh["done"] and sh["sha256"] == v2 and sh["slots"] == ["a-5m", "b-5m"]
    k = driver.kernel
    assert k.ledger.summary()["orders"] == 0, "a shadow sends no order"
    assert set(_shas(driver, "a-5m")) == {v1}, "the live cycles ran the current version only"
    r = driver.command("promote", strategy="tagged")
    assert r["result"] == "applied" and r["detail"]["result"] == "promoted", r
    assert k.snapshot()["strategies"]["tagged"]["shadow"] is None
    driver.advance(M5)
    assert _shas(driver, "a-5m")[-1] == v2 and k.ledger.summary()["orders"] >= 2, "live now: it trades"


def test_rollback_discards_a_shadow(driver, strategies):
    v1 = _two_slots(driver)
    (strategies / "tagged.py").write_text(tagged_hold_source(tag="v2"))
    assert driver.command("reload", strategy="tagged", shadow=True)["result"] == "applied"
    driver.advance(M5)
    sh = _wait_shadow(driver, "a-5m", 1)
    assert sh["per_slot"]["a-5m"]["differences"] == 0, "hold and hold: no difference"
    r = driver.command("rollback", strategy="tagged")
    assert r["result"] == "applied" and r["detail"]["result"] == "shadow_discarded", r
    assert driver.kernel.snapshot()["strategies"]["tagged"]["shadow"] is None
    assert driver.kernel.registry.get("tagged").sha256 == v1


def test_nothing_of_a_canary_or_shadow_runs_during_a_halt(driver, strategies):
    from kernel.shadow import ShadowRun
    from kernel.versions.checks import SmokeSample

    _two_slots(driver)
    k = driver.kernel
    (strategies / "tagged.py").write_text(tagged_hold_source(tag="v2"))
    assert driver.command("reload", strategy="tagged", slots=["a-5m"])["result"] == "applied"
    k.engage_halt("test", source="test")
    r = driver.command("promote", strategy="tagged")
    assert r["result"] == "rejected" and r["error"].startswith("halted: release the halt first")
    r = driver.command("reload", strategy="flip", shadow=True)
    assert r["result"] == "rejected" and r["error"].startswith("halted")
    # A shadow offered a live context after a halt was observed evaluates nothing: skipped, counted.
    version = k.registry.get("tagged")
    run = ShadowRun(version, ["a-5m"], cycles=5, feed=None, halted=lambda: True)
    run.start()
    run.offer(SmokeSample(slot="a-5m", symbol="BTC/USDT", timeframe="5m", params={}), close_ms=0, candles=(),
              live="hold", live_reason=None)
    run.stop()
    d = run.describe()["per_slot"]["a-5m"]
    assert (d["evaluations"], d["skipped"]) == (0, 1)


def test_a_canary_cycle_past_its_deadline_counts_against_the_budget(tmp_path, strategies):
    from tests.kernel.kernel_driver import make_driver
    from tests.support.strategy_sources import counter_source

    driver = make_driver(tmp_path, strategies, cycle_deadline_ms=300)
    try:
        v1 = _two_slots(driver)
        (strategies / "tagged.py").write_text(counter_source(after=2, how="time.sleep(0.8)"))
        r = driver.command("reload", strategy="tagged", slots=["a-5m"], budget={"cycles": 5, "faults": 0})
        assert r["detail"]["result"] == "canary_started", r
        v2 = r["detail"]["new_sha256"]
        k = driver.kernel
        driver.advance(M5)  # cycle 1 of the canary behaves
        driver.clock.jump(M5)  # cycle 2 sleeps past its deadline
        canary = driver.tick_until(
            lambda: (k.snapshot()["strategies"]["tagged"]["canary"]
                     if k.snapshot()["strategies"]["tagged"]["canary"]["state"] == "auto_rolled_back" else None),
            timeout=20, what="the canary rolled back at its deadline")
        assert "missed its deadline" in canary["reason"] and canary["counts"]["faults"] == 1, canary
        driver.settle()  # the stuck cycle comes back: abandoned, and its fault goes with the canary
        assert driver.slot("a-5m")["state"] == "active", driver.slot("a-5m")
        driver.advance(M5)
        assert _shas(driver, "a-5m")[-1] == v1 and v2 not in _shas(driver, "b-5m")
        assert driver.cycles("a-5m")[-2]["result"].startswith("abandoned")
    finally:
        driver.close()


def test_a_canary_whose_orders_are_refused_goes_back_but_a_halt_refusal_is_not_its_fault(driver, strategies):
    v1 = _two_slots(driver)
    assert driver.command("slot.configure", "a-5m", max_notional=100.0)["result"] == "applied"
    (strategies / "tagged.py").write_text(FLIPFLOP)  # enters at once: 500 of notional, over the slot's 100
    r = driver.command("reload", strategy="tagged", slots=["a-5m"], budget={"cycles": 5, "faults": 0})
    assert r["detail"]["result"] == "canary_started", r
    driver.advance(M5)
    canary = driver.kernel.snapshot()["strategies"]["tagged"]["canary"]
    assert canary["state"] == "auto_rolled_back" and "order refused: max_notional" in canary["reason"], canary
    assert driver.cycles("a-5m")[-1]["result"] == "enter:refused:max_notional"
    assert driver.kernel.registry.get("tagged").sha256 == v1
    from kernel.canary import bad_cycle
    assert bad_cycle(fault=None, abandoned=False, order={"status": "refused", "reason": "halted"}) is None
