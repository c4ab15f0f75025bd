"""The command handlers (kernel/command_handlers.py): what each action does."""
from __future__ import annotations

import pytest

from tests.kernel.kernel_driver import M5
from tests.support.strategy_sources import EVALUATE_ALWAYS_RAISES, EVALUATE_ALWAYS_RAISES_FIXED


@pytest.mark.parametrize("action", ["slot.add", "slot.configure"])
def test_a_strategy_first_loaded_for_a_slot_is_checked_before_it_goes_live(driver, strategies, action):
    """A version's first load (a slot asking for a strategy no slot runs yet) passes the same
    checks as a reload: its params for that slot, and a smoke evaluation."""
    (strategies / "broken.py").write_text(EVALUATE_ALWAYS_RAISES)
    driver.add_slot("btc-5m", "flip")
    if action == "slot.add":
        r = driver.command("slot.add", "eth-5m", id="eth-5m", symbol="ETH/USDT", timeframe="5m",
                           strategy="broken", params={})
    else:
        r = driver.command("slot.configure", "btc-5m", strategy="broken", params={})
    assert r["result"] == "rejected", r
    assert "smoke" in r["error"] and "always broken" in r["error"], r
    k = driver.kernel
    assert "broken" not in k.registry.current, "the broken version never went live"
    assert [s["id"] for s in k.snapshot()["slots"]] == ["btc-5m"]
    assert driver.slot("btc-5m")["strategy"] == "flip"
    assert k.snapshot()["reload"]["result"] == "failed"
    # Params are checked against the slot being configured, on first load too.
    (strategies / "broken.py").write_text(EVALUATE_ALWAYS_RAISES_FIXED)
    r = driver.command("slot.configure", "btc-5m", strategy="broken", params={"window": "many"})
    assert r["result"] == "rejected" and "window" in r["error"], r
    assert driver.slot("btc-5m")["strategy"] == "flip"
    r = driver.command("slot.configure", "btc-5m", strategy="broken", params={"window": 7})
    assert r["result"] == "applied", r
    driver.advance(M5)
    assert driver.cycles("btc-5m")[-1]["reason"] == "ok"


# ------------------------------------------------------------------ the table itself


def test_the_handler_table_lists_exactly_the_protocols_actions():
    from kernel.command_handlers import HANDLERS
    from kernel.protocol import ACTIONS

    assert list(HANDLERS) == list(ACTIONS)
    assert all(callable(h) for h in HANDLERS.values())


def test_commands_outside_the_table_or_of_the_wrong_kind_are_rejected_with_a_reason(driver):
    r = driver.command("frobnicate")
    assert r["result"] == "rejected"
    assert r["error"].startswith("unknown action 'frobnicate'; known: start, stop, pause, resume, reload, rollback, "
                                 "release, versions.prune")
    assert r["error"].endswith("slot.pause, slot.resume, slot.flatten, slot.configure, slot.add")
    driver.add_slot("btc-5m", "flip")
    r = driver.command("pause", "btc-5m")
    assert (r["result"], r["error"]) == ("rejected", "pause is a kernel action and takes no slot")
    r = driver.command("slot.pause")
    assert (r["result"], r["error"]) == ("rejected", "slot.pause needs a slot")
    r = driver.command("rollback")
    assert (r["result"], r["error"]) == ("rejected", "rollback needs args.strategy")
    r = driver.command("release")
    assert (r["result"], r["error"]) == ("rejected", "not halted")


def test_start_stop_pause_resume_flip_the_kernels_switches(driver):
    k = driver.kernel
    assert driver.command("stop")["detail"] == {}
    assert driver.command("stop")["detail"] == {"note": "already stopped"}
    assert (k.run_state.running, k.snapshot()["state"]) == (False, "stopped")
    assert driver.command("start")["detail"] == {}
    assert driver.command("start")["detail"] == {"note": "already running"}
    assert driver.command("pause")["result"] == "applied"
    assert (k.run_state.paused, k.snapshot()["state"]) == (True, "paused")
    assert driver.command("resume")["result"] == "applied"
    assert k.snapshot()["state"] == "running"
    assert k.ledger.meta_get("paused") is False and k.ledger.meta_get("running") is True


def test_slot_configure_rejects_an_invalid_config_with_the_field(driver):
    driver.add_slot("btc-5m", "flip")
    r = driver.command("slot.configure", "btc-5m", timeframe="7m")
    assert r["result"] == "rejected"
    assert r["error"].startswith("invalid slot config: timeframe: ")
    r = driver.command("slot.add", "btc-5m", id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="flip")
    assert (r["result"], r["error"]) == ("rejected", "slot 'btc-5m' exists; use slot.configure")
    r = driver.command("slot.add", "x-5m", id="y-5m", symbol="BTC/USDT", timeframe="5m", strategy="flip")
    assert (r["result"], r["error"]) == ("rejected", "slot and args.id disagree")
    r = driver.command("slot.add", "z-5m", id="z-5m", symbol="BTC/USDT", timeframe="5m", strategy="nope")
    assert (r["result"], r["error"]) == ("rejected", "no strategy 'nope' in strategies/")


def test_a_flatten_sells_the_position_and_pauses_the_slot(driver):
    driver.add_slot("btc-5m", "flip")
    driver.advance(M5)  # enters
    k = driver.kernel
    assert k.ledger.position("btc-5m").qty > 0
    r = driver.command("slot.flatten", "btc-5m")
    assert r["result"] == "applied" and r["detail"]["status"] == "filled" and r["detail"]["intent"] == "flatten"
    assert k.ledger.position("btc-5m").qty == 0
    assert driver.slot("btc-5m")["state"] == "paused"
    r = driver.command("slot.flatten", "btc-5m")
    assert r["detail"] == {"note": "no position to flatten", "qty": 0.0}


# ------------------------------------------------------------------ during a halt (issue 10, item 1)


def test_during_a_halt_what_would_run_strategy_code_is_refused_with_the_way_out(driver, strategies):
    """Reload, rollback, a slot.add and a slot.configure of strategy or params would run strategy
    code (import, params validators, smoke run, migrate_state) or change the version under a halted
    kernel: refused, saying to release first. A risk setting may still change."""
    from kernel.control import atomic_write_json

    (strategies / "fixed.py").write_text(EVALUATE_ALWAYS_RAISES_FIXED)
    driver.add_slot("btc-5m", "flip")
    driver.advance(M5)
    k = driver.kernel
    loaded = dict(k.registry.current)
    atomic_write_json(driver.state_dir / "control.json", {"halt": True})
    k.tick_once()
    assert k.snapshot()["state"] == "halted"
    for action, slot, args, what in (
        ("reload", None, {}, "then reload"),
        ("reload", None, {"strategy": "flip"}, "then reload"),
        ("rollback", None, {"strategy": "flip"}, "then roll back"),
        ("slot.add", "eth-5m", {"id": "eth-5m", "symbol": "ETH/USDT", "timeframe": "5m", "strategy": "fixed"},
         "then add the slot"),
        ("slot.add", "eth-5m", {"id": "eth-5m", "symbol": "ETH/USDT", "timeframe": "5m", "strategy": "flip"},
         "then add the slot"),
        ("slot.configure", "btc-5m", {"strategy": "fixed"}, "then change the slot's strategy or params"),
        ("slot.configure", "btc-5m", {"params": {"sleep_ms": 1}}, "then change the slot's strategy or params"),
    ):
        r = driver.command(action, slot, **args)
        assert r["result"] == "rejected", (action, args, r)
        assert r["error"] == f"halted: release the halt first, {what}", (action, args, r)
    assert k.registry.current == loaded and "fixed" not in k.registry.current
    assert [s["id"] for s in k.snapshot()["slots"]] == ["btc-5m"]
    r = driver.command("slot.configure", "btc-5m", max_notional=900.0)
    assert r["result"] == "applied", r
    assert driver.slot("btc-5m")["config"]["max_notional"] == 900.0
