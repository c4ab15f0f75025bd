"""No strategy code after a halt (issue 10, item 1), shown on real ``runkernel`` processes.

The strategy (tests/support/strategy_sources.py ``call_recorder_source``) writes the wall-clock
start (``time.time_ns()``) of every call into it — its params validator, ``warmup``,
``evaluate``, ``migrate_state`` — to the kernel's output, i.e. its log. status.json's
``halt.observed_at_ns`` is the wall-clock instant the kernel observed the halt (taken after the
flag the workers read was set). Shown: no recorded call starts after it, whether the call would
have been a queued cycle's (many slots, few workers, slow evaluate: cycles wait in the pool's
queue), a reload's in flight (a slow smoke run: the reload ends ``abandoned``, reason halted), or
one asked for during the halt (reload, slot.add: refused, nothing called).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from kernel import control_client as ctl
from kernel.demo import DEMO_ASSETS
from kernel.protocol import Command
from tests.support.kernel_process import KernelProcess
from tests.support.ledger_reader import sqlite_rows as query
from tests.support.strategy_folders import write_strategies
from tests.support.strategy_sources import call_recorder_source, recorded_calls
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def recorder_folder(tmp_path: Path, **modules: str) -> Path:
    return write_strategies(tmp_path / "strategies", {"__init__": "", "recorder": call_recorder_source(tag="v1"),
                                                       **modules})


def add_recorder_slots(k: KernelProcess, n: int, *, timeframe: str, sleep_ms: int) -> list[str]:
    cmds = []
    for i in range(n):
        asset = DEMO_ASSETS[i % len(DEMO_ASSETS)]
        slot = f"{asset.lower()}-{timeframe}-{i}"
        cmds.append(Command(id=k.new_id("add"), action="slot.add", slot=slot, args={
            "id": slot, "symbol": f"{asset}/USDT", "timeframe": timeframe, "strategy": "recorder",
            "params": {"sleep_ms": sleep_ms}, "order_notional": 100.0, "max_notional": 1000.0}))
    k.append(cmds)
    for c in cmds:
        assert k.result(c.id)["result"] == "applied"
    return [c.slot for c in cmds]


def calls(k: KernelProcess) -> list[tuple[str, str, str, int]]:
    return recorded_calls(k.log_path.read_text(errors="replace"))


def halt_and_observe(k: KernelProcess, reason: str) -> int:
    """Halt as kernelctl does (control.json, through the writers' lock); the observation instant."""
    ctl.halt(k.state_dir, reason, "integration-test")
    st = k.wait(lambda s: s["state"] == "halted" and s["halt"].get("observed_at_ns"), what="the halt observed")
    return st["halt"]["observed_at_ns"]


def assert_nothing_started_after(k: KernelProcess, observed_at_ns: int) -> list[tuple[str, str, str, int]]:
    recorded = calls(k)
    late = [c for c in recorded if c[3] > observed_at_ns]
    assert late == [], (f"{len(late)} strategy call(s) started after the halt was observed at {observed_at_ns}: "
                        f"{late[:5]}")
    return recorded


def test_no_queued_cycle_starts_its_strategy_after_the_halt(kernels, tmp_path):
    # 16 slots on 1m candles at 600x: every slot is due every 100 ms of wall time, each evaluate
    # sleeps 50 ms, 4 workers: a dozen cycles wait in the queue at any moment.
    k = kernels(strategies=recorder_folder(tmp_path), demo=False, speed=600, tick_ms=100,
                extra=["--workers", "4"])
    add_recorder_slots(k, 16, timeframe="1m", sleep_ms=50)
    k.wait(lambda s: s["cycles"]["ran"] >= 48, what="cycles running")
    observed = halt_and_observe(k, "proof: no strategy code after a halt")
    # The cycles that were queued come off the queue, each stopped before its strategy.
    k.wait(lambda s: s["cycles"]["halted"] >= 1, what="queued cycles stopped by the halt")
    k.wait_ticks(10)
    assert k.terminate() == 0
    recorded = assert_nothing_started_after(k, observed)
    assert sum(1 for c in recorded if c[1] == "evaluate") >= 48
    ledger = k.state_dir / "ledger.sqlite3"
    halted = query(ledger, "SELECT * FROM cycles WHERE result = 'halted'")
    assert halted and all("halted" in (r["reason"] or "") for r in halted)
    final = k.status()
    assert final["cycles"]["halted"] == len(halted)
    assert query(ledger, "SELECT COUNT(*) AS n FROM orders")[0]["n"] == 0  # it only ever holds


def test_a_reload_in_flight_is_abandoned_and_reloads_asked_during_the_halt_are_refused(kernels, tmp_path):
    strategies = recorder_folder(tmp_path, fresh=call_recorder_source(tag="fresh"))
    k = kernels(strategies=strategies, demo=False, speed=600, tick_ms=100,
                extra=["--workers", "4", "--reload-budget-ms", "60000"])
    slots = add_recorder_slots(k, 4, timeframe="1m", sleep_ms=10)
    k.wait(lambda s: s["cycles"]["ran"] >= 8, what="cycles running")
    # v2: a new state schema (each slot's state migrates) and a smoke evaluate of 1.5 s each:
    # the smoke run of three slots takes 4.5 s, and the halt lands during it.
    (strategies / "recorder.py").write_text(call_recorder_source(tag="v2", sleep_ms=1500, state_schema=2))
    reload_id = k.send("reload", args={"strategy": "recorder"})
    wait_until(lambda: any(c[0] == "v2" and c[1] == "evaluate" for c in calls(k)), timeout=60,
               what="the reload's first smoke evaluate", abort=lambda: k.check_alive("the smoke run"))
    observed = halt_and_observe(k, "proof: a reload in flight stops")

    r = k.result(reload_id)
    assert r["result"] == "rejected" and "halted" in r["error"], r
    (entry,) = r["detail"]["strategies"]
    assert entry["result"] == "abandoned" and entry["error"].startswith("halted:"), entry
    # The result may come from the ledger, written before the status that reports it: wait for that status.
    st = k.wait(lambda s: any(c["id"] == reload_id for c in s["commands"]), what="status.json with the reload's result")
    assert st["reload"]["result"] == "abandoned" and "halted" in st["reload"]["error"]
    assert st["strategies"]["recorder"]["version"] == 1, "never swapped in during the halt"
    assert {k.slot(st, s)["strategy_version"] for s in slots} == {1}

    # Asked during the halt: refused with the way out, nothing of the strategy called.
    for action, slot, args, what in (
        ("reload", None, {"strategy": "recorder"}, "reload"),
        ("reload", None, {}, "reload"),
        ("slot.add", "fresh-1m", {"id": "fresh-1m", "symbol": "BTC/USDT", "timeframe": "1m", "strategy": "fresh"},
         "add the slot"),
        ("slot.add", "more-1m", {"id": "more-1m", "symbol": "BTC/USDT", "timeframe": "1m",
                                 "strategy": "recorder"}, "add the slot"),
        ("rollback", None, {"strategy": "recorder"}, None),  # no previous version: refused either way
    ):
        res = k.call(action, slot, args)
        assert res["result"] == "rejected", (action, res)
        if what:
            assert res["error"] == f"halted: release the halt first, then {what}", (action, res)
    k.wait_ticks(10)
    assert k.terminate() == 0
    recorded = assert_nothing_started_after(k, observed)
    assert not [c for c in recorded if c[0] == "fresh"], "a strategy first asked for during the halt ran"
    smoke = [c for c in recorded if c[0] == "v2" and c[1] == "evaluate"]
    assert 1 <= len(smoke) < 3, smoke  # stopped before its next strategy call
