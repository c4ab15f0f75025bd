"""Reloads (kernel/reloader.py) in an in-process kernel: a new version swapped in, a
broken one kept out, a rollback."""
from __future__ import annotations

from tests.kernel.kernel_driver import M5
from tests.support.strategy_sources import HELPER_SYNTAX_ERROR, bare_helper_source, tagged_hold_source


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
