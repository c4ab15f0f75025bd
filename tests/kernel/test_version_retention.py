"""Issue 16, target 5: reloads do not accumulate strategy versions. After 200 reloads of a
changed strategy (and its helper module), the generations the process still holds — in
sys.modules, as live module objects, as live ``Params`` classes — are as many as after the
first two: the current version and the previous one (kept for rollback), nothing more."""
from __future__ import annotations

import gc
import sys
import types

from kernel.strategy_api import StrategyParams
from kernel.versions.generations import GEN_PREFIX, _finder
from tests.kernel.kernel_driver import M5
from tests.support.strategy_sources import bare_helper_source, tagged_hold_source


def retained() -> dict[str, int]:
    gc.collect()
    live_modules = [o for o in gc.get_objects()
                    if isinstance(o, types.ModuleType) and o.__name__.startswith(GEN_PREFIX)]
    return {
        "sys_modules": sum(1 for k in list(sys.modules) if k.startswith(GEN_PREFIX)),
        "generations": len(_finder.generations),
        "live_modules": len(live_modules),
        "params_classes": len(StrategyParams.__subclasses__()),
    }


def reload_changed(driver, strategies, tag: str) -> None:
    (strategies / "tagged.py").write_text(tagged_hold_source(tag=tag))
    (strategies / "tag_helper.py").write_text(bare_helper_source(tag=tag))
    r = driver.command("reload", strategy="tagged")
    assert r["result"] == "applied", r
    assert r["detail"]["strategies"][0]["result"] == "loaded", r


def test_200_reloads_leave_the_retained_versions_bounded(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    driver.advance(M5)
    for i in range(2):  # current and previous both exist from here on
        reload_changed(driver, strategies, f"w{i}")
    driver.advance(M5)
    baseline = retained()
    assert baseline["sys_modules"] >= 2 and baseline["live_modules"] >= 2  # the counts see the versions
    for i in range(200):
        reload_changed(driver, strategies, f"r{i}")
        if i % 50 == 49:
            driver.advance(M5)  # cycles run on the new versions meanwhile
    after = retained()
    # Not more than at the baseline: a leak grows by one per reload (200 here). Fewer is fine:
    # versions an earlier test in this process left behind may be collected meanwhile.
    assert all(after[k] <= baseline[k] for k in baseline), (baseline, after)
    assert after["generations"] >= 2 and after["sys_modules"] >= 2  # current and previous still held
    assert driver.cycles("btc-5m")[-1]["reason"] == "r199|r199"
