"""Halt, written into control.json by another process while cycles are in flight.

Shown: status says ``halted`` within one tick of the write; no order passed the gate
after the kernel observed the halt (the gate's pass times and the halt's observation
time are both monotonic ns of this machine); every order that passed before the halt is
in the main database file once the halt has flushed the ledger; the halt survives a
restart (no cycle runs while halted); ``resume`` before ``release`` and a ``release``
while control.json still asks for a halt are rejected; ``release`` then ``resume``
trades again. A second halt, written by another process through the writers' lock, holds
the same way.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kernel.control import atomic_write_text
from kernel.protocol import Command
from tests.support.kernel_process import WAIT_S, kernel_env
from tests.support.ledger_reader import ledger_halt
from tests.support.ledger_reader import sqlite_rows as query
from tests.support.processes import run_python
from tests.support.status_reader import iso_to_ms

from .conftest import add_flip_slots

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TICK_MS = 250
# 1m candles close at every tick (100 ms of wall time at 600x), and every cycle sleeps a
# hashed 0.3-1.5 s before it orders: the slots fall out of step at once, so at any moment
# several of them have a cycle in flight that is about to order (all 8 idle at once: ~1e-7).
TIMEFRAME = "1m"
FLIP_PARAMS = {"sleep_ms": 300, "jitter_ms": 1200}


def check_gate(ledger: Path, observed_ns: int, since_ms: int) -> list[dict]:
    orders = query(ledger, "SELECT * FROM orders")
    passed = [o for o in orders if o["passed_ns"] is not None]
    late = [o for o in passed if o["passed_ns"] >= observed_ns]
    assert late == [], f"orders passed the gate after the halt was observed: {late[:3]}"
    created_after = [o for o in orders if o["created_ms"] > since_ms]
    bad = [o for o in created_after if o["status"] in ("sent", "filled", "open")]
    assert bad == [], f"orders created after the halt went out: {bad[:3]}"
    return orders


def test_halt_in_flight_restart_release_resume(kernels, strategies_dir, tmp_path):
    k = kernels(strategies=strategies_dir, demo=False, tick_ms=TICK_MS, extra=["--reload-budget-ms", "5000"])
    slots = add_flip_slots(k, 8, timeframe=TIMEFRAME, **FLIP_PARAMS)
    ledger = k.state_dir / "ledger.sqlite3"
    k.wait(lambda s: s["ledger"]["fills"] >= 12, what="orders flowing")

    # -- the halt: a raw atomic write from this process, right after a status write. That
    # status is published at the end of a tick, so the tick it names has read control.json
    # already and the next read is a tick away: a write made now is due to be seen by
    # tick + 1 (the tick is 250 ms, the write takes a few).
    st = k.next_status()
    tick_before = st["tick"]
    atomic_write_text(k.state_dir / "control.json", '{"halt": true}')
    st = k.wait(lambda s: s["state"] == "halted", what="halted")
    observed_tick = st["cycles"]["halt_observed_tick"]
    assert observed_tick is not None and 0 < observed_tick - tick_before <= 1, (tick_before, observed_tick)
    assert st["halt"]["engaged"] is True
    meta = ledger_halt(k.state_dir)
    observed_ns = meta["observed_ns"]
    since_ms = iso_to_ms(meta["since"])

    # -- the ledger is flushed: once the halt's flush is done, a copy of the main
    # database file alone (no -wal) holds every order that passed the gate.
    st = k.wait(lambda s: s["halt"].get("flushed_at"), what="the halt's cancel sweep and ledger flush")
    assert st["halt"]["cancels_pending"] is False and st["halt"]["cancel_failed"] == []
    copy = tmp_path / "ledger-main-file-only.sqlite3"
    shutil.copyfile(ledger, copy)
    in_copy = {o["client_order_id"]: o for o in query(copy, "SELECT * FROM orders WHERE passed_ns IS NOT NULL")}
    passed_live = query(ledger, "SELECT * FROM orders WHERE passed_ns IS NOT NULL")
    assert len(passed_live) >= 12
    missing = [o["client_order_id"] for o in passed_live if o["client_order_id"] not in in_copy]
    assert missing == [], f"passed orders not in the flushed main file: {missing}"
    fills_copy = {f["fill_id"] for f in query(copy, "SELECT fill_id FROM fills")}
    fills_of_passed = query(ledger, "SELECT f.fill_id FROM fills f JOIN orders o USING (client_order_id)"
                                    " WHERE o.passed_ns IS NOT NULL")
    assert {f["fill_id"] for f in fills_of_passed} <= fills_copy

    # -- cycles in flight at the halt came back wanting to order: refused.
    k.wait(lambda s: query(ledger, "SELECT 1 FROM cycles WHERE result LIKE '%refused:halted%'"),
           what="an in-flight cycle's order refused by the halt")
    assert k.terminate() == 0  # in-flight cycles finish before the process ends
    check_gate(ledger, observed_ns, since_ms)
    cycles_at_stop = query(ledger, "SELECT COUNT(*) AS n FROM cycles")[0]["n"]
    final = k.status()
    assert final["state"] in ("stopped", "halted")

    # -- the halt survives a restart: halted at once, and no cycle runs while halted.
    k = kernels(k.state_dir, strategies=strategies_dir, demo=False, tick_ms=TICK_MS,
                extra=["--reload-budget-ms", "5000"])
    st = k.wait(lambda s: s["state"] == "halted", what="halted after restart")
    assert st["halt"]["engaged"] is True
    st = k.wait_ticks(12)  # 12 ticks = 3 s wall = 30 min of clock: thirty 1m closes
    assert st["state"] == "halted" and st["cycles"]["ran"] == 0
    assert query(ledger, "SELECT COUNT(*) AS n FROM cycles")[0]["n"] == cycles_at_stop

    # -- resume before release: rejected. release while control.json says halt: rejected.
    r = k.call("resume")
    assert r["result"] == "rejected" and "release" in r["error"], r
    rel = Command(id=k.new_id("rel"), action="release")
    k.append([rel])  # halt key left as it is: still true
    r = k.result(rel.id)
    assert r["result"] == "rejected" and "still asks for a halt" in r["error"], r
    assert k.status()["state"] == "halted"

    # -- release (written together with halt: false, as kernelctl and the console do), then resume.
    r = k.call("release")
    assert r["result"] == "applied", r
    st = k.wait(lambda s: s["state"] == "paused", what="paused after release")
    assert st["halt"]["engaged"] is False
    k.ok("resume")
    orders_before = query(ledger, "SELECT COUNT(*) AS n FROM orders WHERE status='filled'")[0]["n"]
    st = k.wait(lambda s: s["state"] == "running" and s["cycles"]["ran"] >= 8, what="cycles after resume")
    k.wait(lambda s: query(ledger, "SELECT COUNT(*) AS n FROM orders WHERE status='filled'")[0]["n"]
           >= orders_before + 4, what="orders after resume")

    # -- a second halt from another process, through the writers' lock (kernel.control_client.halt is
    # what kernelctl halt and the console call).
    done = run_python(f"from kernel.control_client import halt; halt({str(k.state_dir)!r}, 'second halt', 'ops')",
                      env=kernel_env(), timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    st = k.wait(lambda s: s["state"] == "halted")
    assert st["halt"]["reason"] == "second halt"
    meta = ledger_halt(k.state_dir)
    assert meta["reason"] == "second halt"
    assert k.terminate() == 0
    orders = check_gate(ledger, meta["observed_ns"], iso_to_ms(meta["since"]))
    assert any(o["passed_ns"] for o in orders)
    for slot in slots:  # every slot traded at some point
        assert any(o["slot"] == slot and o["status"] == "filled" for o in orders), slot
