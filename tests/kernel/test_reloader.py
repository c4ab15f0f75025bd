"""Reloads (kernel/reloader.py) in an in-process kernel: a new version swapped in, a
broken one kept out, a rollback; a reload stopped by a halt; what status.json says each slot
runs; smoke contexts shaped as live ones."""
from __future__ import annotations

from tests.kernel.kernel_driver import M5
from tests.support.strategy_sources import (HELPER_SYNTAX_ERROR, LIVE_SHAPE_CHECKER, bare_helper_source,
                                            tagged_hold_source)


def test_reload_swaps_a_new_version_and_keeps_the_old_one_when_broken(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    driver.advance(M5)
    k = driver.kernel
    v1 = k.registry.get("tagged").sha256
    assert driver.command("reload", strategy="tagged")["detail"]["strategies"][0]["result"] == "unchanged"
    (strategies / "tagged.py").write_text(tagged_hold_source(tag="v2"))
    (strategies / "tag_helper.py").write_text(bare_helper_source(tag="v2"))
    r = driver.command("reload", strategy="tagged")
    assert r["result"] == "applied"
    v2 = k.registry.get("tagged").sha256
    assert v2 != v1 and r["detail"]["strategies"][0]["new_sha256"] == v2
    driver.advance(M5)
    last = driver.cycles("btc-5m")[-1]
    assert (last["sha256"], last["reason"]) == (v2, "v2|v2")
    (strategies / "tag_helper.py").write_text(HELPER_SYNTAX_ERROR)
    r = driver.command("reload", strategy="tagged")
    assert r["result"] == "rejected" and "import:" in r["error"]
    assert k.snapshot()["reload"]["result"] == "failed"
    assert k.registry.get("tagged").sha256 == v2
    driver.advance(M5)
    last = driver.cycles("btc-5m")[-1]
    assert (last["sha256"], last["reason"]) == (v2, "v2|v2")
    r = driver.command("rollback", strategy="tagged")
    assert r["result"] == "applied" and k.registry.get("tagged").sha256 == v1
    driver.advance(M5)
    assert driver.cycles("btc-5m")[-1]["reason"] == "v1|v1"


def test_a_reload_that_starts_after_a_halt_is_abandoned_before_any_strategy_code(driver, strategies):
    """A reload queued before the halt and started after it: ``abandoned``, reason halted, the
    old version kept."""
    from kernel.control import atomic_write_json

    driver.add_slot("btc-5m", "tagged")
    driver.advance(M5)
    k = driver.kernel
    v1 = k.registry.get("tagged")
    samples = k.reloader.smoke_samples("tagged")
    (strategies / "tagged.py").write_text(tagged_hold_source(tag="v2"))
    atomic_write_json(driver.state_dir / "control.json", {"halt": True})
    k.tick_once()
    r = k.reloader.reload_one("tagged", samples, "c1")
    assert r["result"] == "abandoned" and r["error"].startswith("halted: halted:"), r
    assert "release the halt first" in r["error"]
    assert k.registry.get("tagged") is v1


def test_slot_versions_name_the_next_cycles_and_the_last_cycles(driver, strategies):
    """status.json: ``strategy_version``/``strategy_sha256`` are what the slot's next cycle
    runs (current at once after a reload); ``last_cycle_version``/``last_cycle_sha256`` what its
    last cycle ran, from that cycle's outcome."""
    driver.add_slot("btc-5m", "tagged")
    s = driver.slot("btc-5m")
    assert (s["strategy_version"], s["last_cycle_version"], s["last_cycle_sha256"]) == (1, None, None)
    driver.advance(M5)
    k = driver.kernel
    v1 = k.registry.get("tagged")
    s = driver.slot("btc-5m")
    assert (s["strategy_version"], s["last_cycle_version"], s["last_cycle_sha256"]) == (1, 1, v1.sha256)
    (strategies / "tagged.py").write_text(tagged_hold_source(tag="v2"))
    assert driver.command("reload", strategy="tagged")["result"] == "applied"
    v2 = k.registry.get("tagged")
    s = driver.slot("btc-5m")
    assert (s["strategy_version"], s["strategy_sha256"]) == (2, v2.sha256)
    assert (s["last_cycle_version"], s["last_cycle_sha256"]) == (1, v1.sha256), "no cycle ran v2 yet"
    driver.advance(M5)
    s = driver.slot("btc-5m")
    assert (s["last_cycle_version"], s["last_cycle_sha256"]) == (2, v2.sha256)
    assert driver.cycles("btc-5m")[-1]["sha256"] == v2.sha256


def test_smoke_and_live_contexts_have_one_shape(driver, strategies):
    """LIVE_SHAPE_CHECKER raises unless its ctx is shaped like a live cycle's (now_ms at the
    close, the full warm-up, the slot's own params and state). Five slots (more than
    smoke_slots): the first load's smoke run, every live cycle and a reload's smoke run pass."""
    (strategies / "shape.py").write_text(LIVE_SHAPE_CHECKER)
    ids = [f"s{i}-5m" for i in range(5)]
    for i, slot in enumerate(ids):
        driver.add_slot(slot, "shape", timeframe=("5m", "15m")[i % 2], params={"marker": slot, "window": 6 + i})
    driver.advance(3 * M5)
    for slot in ids:
        rows = driver.cycles(slot)
        assert rows and all(r["result"] == "hold" and r["reason"].startswith("live-shaped") for r in rows), rows
        assert driver.slot(slot)["fault"] is None
    (strategies / "shape.py").write_text(LIVE_SHAPE_CHECKER + "\n# v2\n")
    r = driver.command("reload", strategy="shape")
    assert r["result"] == "applied", r
    assert r["detail"]["strategies"][0]["result"] == "loaded"
