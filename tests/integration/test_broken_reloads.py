"""Broken code never goes live.

At reload time: a syntax error, an import error, an exception at import, a missing
``evaluate``, params that no longer validate, ``evaluate`` raising, ``evaluate`` hanging
past the reload budget, a strategy that changes module-level state. Each reload command
is rejected with an error naming the stage, status.reload says ``failed``, and the old
version (same sha256) keeps trading.

At run time (the fault shows only once ``ctx.state`` counts past N): ``evaluate``
raising, hanging past the cycle deadline, changing module-level state. Each slot is
paused with its fault in status.json, the other slots keep trading, and the hung
cycle's order is refused by the gate.
"""
from __future__ import annotations

import pytest

from kernel.control import atomic_write_text as write_atomic
from tests.support.ledger_reader import sqlite_rows as query
from tests.support.strategy_sources import BROKEN_AT_RELOAD as BROKEN
from tests.support.strategy_sources import HOLD_GOOD as GOOD
from tests.support.strategy_sources import runtime_fault_source

pytestmark = pytest.mark.integration

VICTIM_SLOTS = ("btc-5m", "eth-5m")


def test_every_kind_of_broken_reload_is_rejected_and_the_old_version_keeps_trading(kernels, strategies_dir):
    (strategies_dir / "victim.py").write_text(GOOD)
    k = kernels(strategies=strategies_dir, extra=["--reload-budget-ms", "500"])
    for slot in VICTIM_SLOTS:
        k.ok("slot.configure", slot, {"strategy": "victim", "params": {}})
    st = k.wait(lambda s: "victim" in s["strategies"])
    good_sha = st["strategies"]["victim"]["sha256"]
    ledger = k.state_dir / "ledger.sqlite3"

    def last_victim_cycle() -> int:
        rows = query(ledger, "SELECT MAX(candle_ms) AS m FROM cycles WHERE slot=? AND strategy='victim'",
                     (VICTIM_SLOTS[0],))
        return rows[0]["m"] or 0

    k.wait(lambda s: last_victim_cycle() > 0, what="a first victim cycle")
    for name, (stage, source) in BROKEN.items():
        write_atomic(strategies_dir / "victim.py", source)
        r = k.result(k.send("reload", args={"strategy": "victim"}))
        assert r["result"] == "rejected", (name, r)
        assert f"victim: {stage}:" in r["error"], (name, r["error"])
        st = k.wait(lambda s: s["reload"].get("command_id") == r["id"], what=f"{name}: status.reload")
        assert st["reload"]["result"] == "failed", (name, st["reload"])
        assert st["reload"]["error"].startswith(f"{stage}:"), (name, st["reload"])
        assert st["reload"]["old_sha256"] == good_sha
        assert st["strategies"]["victim"]["sha256"] == good_sha
        for slot in VICTIM_SLOTS:
            s = k.slot(st, slot)
            assert s["strategy_sha256"] == good_sha and s["state"] == "active" and s["fault"] is None, (name, s)
        # The old version keeps trading: new cycles, recorded with the old sha256.
        seen = last_victim_cycle()
        k.wait(lambda s: last_victim_cycle() > seen, what=f"{name}: a cycle after the failed reload")
        rows = query(ledger, "SELECT sha256, result, reason FROM cycles WHERE strategy='victim' AND candle_ms>?",
                     (seen,))
        assert rows and all(r["sha256"] == good_sha and r["reason"] == "good" for r in rows), (name, rows)
    assert k.alive()
    reloads = [r for r in k.status()["reloads"] if r["strategy"] == "victim"]
    assert [r["result"] for r in reloads[-len(BROKEN):]] == ["failed"] * len(BROKEN)
    # Put good code back: the same sources are the same version.
    write_atomic(strategies_dir / "victim.py", GOOD)
    r = k.result(k.send("reload", args={"strategy": "victim"}))
    assert r["result"] == "applied" and r["detail"]["strategies"][0]["result"] == "unchanged"


RUNTIME_FAULTS = {
    # strategy: (slot, source, words expected in the slot's fault)
    "rt_raise": ("btc-5m", runtime_fault_source(after=4, what="raises",
                                                how='raise RuntimeError(f"cycle {n} went wrong")'),
                 "evaluate raised RuntimeError: cycle 4 went wrong"),
    "rt_hang": ("eth-5m", runtime_fault_source(after=4, what="hangs past the deadline, then wants to exit",
                                               how="time.sleep(3)"),
                "exceeded its deadline"),
    "rt_mutate": ("sol-5m", runtime_fault_source(after=4, what="changes module-level state",
                                                 how="_SEEN.append(n)"),
                  "module-level state"),
}


def test_runtime_faults_pause_their_slot_while_the_others_trade(kernels, strategies_dir):
    for name, (_, source, _) in RUNTIME_FAULTS.items():
        (strategies_dir / f"{name}.py").write_text(source)
    k = kernels(strategies=strategies_dir, extra=["--cycle-deadline-ms", "1000"])
    for name, (slot, _, _) in RUNTIME_FAULTS.items():
        k.ok("slot.configure", slot, {"strategy": name, "params": {}})
    faulty = {slot for slot, _, _ in RUNTIME_FAULTS.values()}

    def faulted(st: dict) -> bool:
        return all(k.slot(st, slot)["fault"] for slot in faulty)

    st = k.wait(faulted, what="every runtime fault reported")
    for name, (slot, _, words) in RUNTIME_FAULTS.items():
        s = k.slot(st, slot)
        assert s["state"] == "paused", s
        assert words in s["fault"], (name, s["fault"])
        assert s["errors"] >= 1
    ledger = k.state_dir / "ledger.sqlite3"
    # Each strategy ran fine until its counter passed N: faults are runtime faults.
    for name, (slot, _, _) in RUNTIME_FAULTS.items():
        rows = query(ledger, "SELECT result, reason FROM cycles WHERE slot=? AND strategy=? ORDER BY candle_ms",
                     (slot, name))
        assert [r["reason"] for r in rows[:3]] == ["n=1", "n=2", "n=3"], (name, rows[:5])

    # The other slots keep trading: two more cycles each, active, no fault.
    others = [s["id"] for s in st["slots"] if s["id"] not in faulty]
    before = {s["id"]: s["cycles"] for s in st["slots"]}
    st = k.wait(lambda s: all(k.slot(s, o)["cycles"] >= before[o] + 2 for o in others), what="others trading")
    for o in others:
        s = k.slot(st, o)
        assert s["state"] == "active" and s["fault"] is None, s

    # The hung cycle came back after its deadline wanting to exit: the gate refused it.
    hang_slot = RUNTIME_FAULTS["rt_hang"][0]

    def hung_cycles() -> list[dict]:
        return query(ledger, "SELECT candle_ms, result FROM cycles WHERE slot=? AND result LIKE 'abandoned%'",
                     (hang_slot,))

    k.wait(lambda s: hung_cycles(), what="the hung cycle's outcome")
    hung = hung_cycles()[0]
    assert hung["result"] == "abandoned:refused:deadline", hung
    orders = query(ledger, "SELECT intent, status, error, passed_ns FROM orders WHERE slot=? AND candle_ms=?",
                   (hang_slot, hung["candle_ms"]))
    assert len(orders) == 1 and orders[0]["status"] == "refused", orders
    assert "deadline" in orders[0]["error"] and orders[0]["passed_ns"] is None
    sent_after = query(ledger, "SELECT * FROM orders WHERE slot=? AND candle_ms>=? AND status IN ('sent','filled')",
                       (hang_slot, hung["candle_ms"]))
    assert sent_after == [], "no order of a hung cycle (or of its paused slot) went out"
    st = k.status()
    assert st["cycles"]["abandoned"] >= 1
    assert k.alive()
