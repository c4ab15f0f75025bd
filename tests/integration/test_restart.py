"""Restart on the same state dir after a SIGTERM, a ``kill -9`` from outside, and a
SIGKILL the kernel gives itself between the broker's fill and the ledger's record of it
(kernel/crash_points.py), all while orders are flowing.

Shown: positions survive (SIGTERM: exactly as they were; kill -9: once startup
reconciliation has run, the ledger's positions equal the sum of its fills, every fill at
the paper exchange is in the ledger and each asset's balance there equals the ledger's
positions in it); the applied-command memory survives (an applied id delivered again is
neither applied nor reported again); status.json reports the reconciliation.
"""
from __future__ import annotations

import shutil
from decimal import Decimal

import pytest

from kernel.protocol import Command
from tests.support.ledger_reader import ledger_positions, net_fills
from tests.support.ledger_reader import sqlite_rows as query

from .conftest import add_flip_slots

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UNFINISHED = ("intent", "sent", "open")


def paper_balances(state_dir) -> dict[str, Decimal]:
    rows = query(state_dir / "paper-exchange.sqlite3", "SELECT currency, total FROM balances")
    return {r["currency"]: Decimal(r["total"]) for r in rows}


def check_books(state_dir) -> None:
    """The ledger against itself and against the exchange."""
    ledger = state_dir / "ledger.sqlite3"
    positions = ledger_positions(ledger)
    fills = net_fills(ledger)
    for slot in set(positions) | set(fills):
        assert positions.get(slot, 0.0) == pytest.approx(fills.get(slot, 0.0), abs=1e-9), slot
    paper = {r["fill_id"] for r in query(state_dir / "paper-exchange.sqlite3", "SELECT fill_id FROM fills")}
    ours = {r["fill_id"] for r in query(ledger, "SELECT fill_id FROM fills")}
    assert paper - ours == set(), f"fills at the exchange missing from the ledger: {sorted(paper - ours)[:5]}"
    assert ours - paper == set(), f"fills in the ledger the exchange never made: {sorted(ours - paper)[:5]}"
    symbols = {r["slot"]: r["symbol"] for r in query(ledger, "SELECT slot, symbol FROM positions")}
    held: dict[str, float] = {}
    for slot, qty in positions.items():
        base = symbols[slot].split("/")[0]
        held[base] = held.get(base, 0.0) + qty
    balances = paper_balances(state_dir)
    for base, qty in held.items():
        assert float(balances.get(base, Decimal(0))) == pytest.approx(qty, rel=1e-9, abs=1e-12), base
    assert query(ledger, f"SELECT * FROM orders WHERE status IN {UNFINISHED}") == []


@pytest.mark.parametrize("how", ["sigterm", "kill9", "crash_before_fill_recorded"])
def test_restart_keeps_positions_and_applied_commands(kernels, strategies_dir, how):
    env = {"FORESIGHT_CRASH_AT": "order_placed:25"} if how == "crash_before_fill_recorded" else None
    start_args = dict(strategies=strategies_dir, demo=False, extra=["--reload-budget-ms", "5000"])
    k = kernels(env=env, **start_args)
    state_dir = k.state_dir
    ledger = state_dir / "ledger.sqlite3"
    slots = add_flip_slots(k, 8, sleep_ms=5, jitter_ms=40)
    # Two commands whose order matters: a1 then a2. a1 must never be applied again.
    a1 = k.send("slot.configure", slots[0], {"order_notional": 111.0})
    assert k.result(a1)["result"] == "applied"
    a2 = k.send("slot.configure", slots[0], {"order_notional": 222.0})
    assert k.result(a2)["result"] == "applied"
    k.wait(lambda s: k.slot(s, slots[0])["config"]["order_notional"] == 222.0)

    if how == "sigterm":
        k.wait(lambda s: s["ledger"]["fills"] >= 20, what="orders flowing")
        assert k.terminate() == 0
    elif how == "kill9":
        k.wait(lambda s: s["ledger"]["fills"] >= 20, what="orders flowing")
        assert k.kill9() == -9
    else:
        k.proc.wait(60)  # the kernel kills itself at its 25th order, broker filled, ledger not told
        assert k.proc.returncode == -9, k.log_tail()
    assert not k.alive()
    positions_before = ledger_positions(ledger)
    fills_before = query(ledger, "SELECT COUNT(*) AS n FROM fills")[0]["n"]
    unfinished = query(ledger, f"SELECT client_order_id, status FROM orders WHERE status IN {UNFINISHED}")
    if how == "sigterm":
        assert unfinished == [], "a graceful stop leaves no order in doubt"
    if how == "crash_before_fill_recorded":
        # The 25th order is at the exchange, not in the ledger (other slots' orders may be in flight too).
        assert "sent" in {o["status"] for o in unfinished}, unfinished
    # Deliver a1 again (as a console re-sending unacknowledged commands would) and keep the
    # kernel from trading at its first tick, so that what it holds at boot can be compared.
    k.append([Command(id=a1, action="slot.configure", slot=slots[0], args={"order_notional": 111.0}),
              Command(id="restart-stop", action="stop")])

    k = kernels(state_dir, **start_args)
    st = k.wait(lambda s: any(c["id"] == "restart-stop" for c in s["commands"]), what="the stop command")
    assert st["state"] == "stopped"
    rec = st["ledger"]["reconciled"]
    assert rec is not None and rec["checked"] == len(unfinished), rec
    if how == "crash_before_fill_recorded":
        assert rec["filled"] >= 1 and rec["fills_recorded"] >= 1, rec
        assert query(ledger, "SELECT COUNT(*) AS n FROM fills")[0]["n"] == fills_before + rec["fills_recorded"]
    check_books(state_dir)
    if how == "sigterm":
        assert ledger_positions(ledger) == positions_before
    for s in st["slots"]:
        assert s["position"]["qty"] == pytest.approx(ledger_positions(ledger).get(s["id"], 0.0), abs=1e-12)
    # Applied-command memory: a1 was neither applied again nor reported twice.
    assert k.slot(st, slots[0])["config"]["order_notional"] == 222.0
    assert [c["id"] for c in st["commands"]].count(a1) == 1
    assert a1 not in st["pending_commands"]
    assert len(query(ledger, "SELECT * FROM commands WHERE id=?", (a1,))) == 1

    # Trading resumes and the books stay straight.
    filled = query(ledger, "SELECT COUNT(*) AS n FROM fills")[0]["n"]
    restarted_ms = max(o["created_ms"] for o in query(ledger, "SELECT created_ms FROM orders"))

    def slot0_entries() -> list[dict]:
        return query(ledger, "SELECT qty, ref_price FROM orders WHERE slot=? AND intent='entry' AND created_ms>?",
                     (slots[0], restarted_ms))

    k.ok("start")
    k.wait(lambda s: query(ledger, "SELECT COUNT(*) AS n FROM fills")[0]["n"] >= filled + 8 and slot0_entries(),
           what="trading again")
    assert k.terminate() == 0
    check_books(state_dir)
    # No candle ran twice: a restarted clock never goes back behind a cycle already run, so
    # each slot's cycle count equals its rows in the ledger (which keep one per candle).
    final = k.status()
    rows = {r["slot"]: r["n"] for r in query(ledger, "SELECT slot, COUNT(*) AS n FROM cycles GROUP BY slot")}
    assert {s["id"]: s["cycles"] for s in final["slots"]} == rows
    # Slot 0 trades with a2's notional still: a1, delivered again, changed nothing.
    assert all(o["qty"] * o["ref_price"] == pytest.approx(222.0, rel=1e-9) for o in slot0_entries())


def test_a_restart_after_kill9_never_runs_a_candle_twice(kernels):
    """The kernel's stored clock is written about once a second; cycles are recorded every
    tick. Killed in between, the ledger holds a candle later than the stored clock: the
    restarted kernel must not run that candle again (nor count it twice)."""
    for _attempt in range(5):
        k = kernels(demo=True)
        ledger = k.state_dir / "ledger.sqlite3"

        def ahead() -> bool:
            clock = query(ledger, "SELECT value FROM meta WHERE key='clock_ms'")
            last = query(ledger, "SELECT MAX(candle_ms) AS m FROM cycles")[0]["m"]
            return bool(clock and last and last > int(clock[0]["value"]))

        k.wait(lambda s: s["cycles"]["ran"] >= 16 and ahead(), what="a cycle recorded past the stored clock")
        k.kill9()
        if ahead():
            break
        # A status write (which stores the clock) slipped in before the kill: try again.
        shutil.rmtree(k.state_dir)
    else:
        pytest.fail("could not kill the kernel between a cycle and the next clock write")
    before = {r["slot"]: r["m"] for r in query(ledger, "SELECT slot, MAX(candle_ms) AS m FROM cycles GROUP BY slot")}
    k = kernels(k.state_dir, demo=True)
    # A slot with no cycle before the kill (a 15m slot, when 16 cycles were all 5m ones) has none to pass.
    k.wait(lambda s: all(r["m"] > before.get(r["slot"], -1) for r in
                         query(ledger, "SELECT slot, MAX(candle_ms) AS m FROM cycles GROUP BY slot")),
           what="every slot past its last candle")
    assert k.terminate() == 0
    final = k.status()
    rows = {r["slot"]: r["n"] for r in query(ledger, "SELECT slot, COUNT(*) AS n FROM cycles GROUP BY slot")}
    counted = {s["id"]: s["cycles"] for s in final["slots"]}
    assert counted == rows, {s: (counted[s], rows.get(s)) for s in counted if counted[s] != rows.get(s)}


def test_a_command_remembered_as_applied_keeps_its_effect_after_kill9(kernels):
    """SIGKILL right after the ledger records a command as applied (kernel/crash_points.py,
    ``command_recorded``): after the restart the command is not applied again, so its
    effect must already be durable with its result."""
    k = kernels(env={"FORESIGHT_CRASH_AT": "command_recorded:2"})
    k.send("slot.configure", "eth-5m", {"order_notional": 333.0}, command_id="c-configure")
    k.send("slot.pause", "btc-5m", command_id="c-pause")
    k.proc.wait(60)
    assert k.proc.returncode == -9, k.log_tail()
    assert {r["id"] for r in query(k.state_dir / "ledger.sqlite3", "SELECT id FROM commands")} == {
        "c-configure", "c-pause"}
    k = kernels(k.state_dir)
    st = k.wait_ticks(3)
    assert [c["id"] for c in st["commands"]] == ["c-configure", "c-pause"]
    assert k.slot(st, "btc-5m")["state"] == "paused", "the pause was remembered as applied: it must hold"
    assert k.slot(st, "eth-5m")["config"]["order_notional"] == 333.0
