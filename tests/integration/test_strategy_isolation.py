"""No state or code from outside a strategy's own modules, with a real runkernel.

- A reload of a strategy that counts its calls on a class attribute is rejected at its checks
  (status.reload says failed, stage ``stateless``) and the old version keeps trading; a version
  that starts counting only later (after its smoke evaluation) is caught at the first cycle that
  changes the class: its slot is faulted and paused, the other slots trade on.
- A strategy that is a symlink to a file outside strategies/ (or imports a symlinked helper) is
  refused by ``reload``, ``slot.add`` and ``slot.configure`` with the reason, and its code never
  runs: it would create a marker file, and the file never appears.
"""
from __future__ import annotations

import pytest

from kernel.control import atomic_write_text as write_atomic
from tests.support.ledger_reader import sqlite_rows as query
from tests.support.stateful_sources import STATEFUL, marker_source, stateful_source
from tests.support.strategy_sources import HOLD_GOOD as GOOD
from tests.support.strategy_sources import bare_helper_source, tagged_hold_source

pytestmark = pytest.mark.integration

SLOT = "btc-5m"


def test_a_class_attribute_counter_is_refused_at_reload_and_caught_at_run_time(kernels, strategies_dir):
    (strategies_dir / "counter.py").write_text(GOOD)
    (strategies_dir / "helper.py").write_text(bare_helper_source(tag="h1"))
    k = kernels(strategies=strategies_dir)
    k.ok("slot.configure", SLOT, {"strategy": "counter", "params": {}})
    st = k.wait(lambda s: "counter" in s["strategies"])
    good_sha = st["strategies"]["counter"]["sha256"]
    ledger = k.state_dir / "ledger.sqlite3"

    def last_cycle() -> int:
        rows = query(ledger, "SELECT MAX(candle_ms) AS m FROM cycles WHERE slot=? AND strategy='counter'", (SLOT,))
        return rows[0]["m"] or 0

    k.wait(lambda s: last_cycle() > 0, what="a first cycle of counter")

    # 1. Counting on a class attribute at every call: the smoke evaluation shows it, the reload fails.
    write_atomic(strategies_dir / "counter.py", stateful_source(*STATEFUL["class attribute"]))
    r = k.result(k.send("reload", args={"strategy": "counter"}))
    assert r["result"] == "rejected", r
    assert "counter: stateless:" in r["error"], r["error"]
    st = k.wait(lambda s: s["reload"].get("command_id") == r["id"], what="status.reload")
    assert st["reload"]["result"] == "failed" and st["reload"]["error"].startswith("stateless:"), st["reload"]
    assert "module-level state" in st["reload"]["error"]
    assert st["strategies"]["counter"]["sha256"] == good_sha
    s = k.slot(st, SLOT)
    assert s["strategy_sha256"] == good_sha and s["state"] == "active" and s["fault"] is None, s
    seen = last_cycle()
    k.wait(lambda s: last_cycle() > seen, what="a cycle after the failed reload")
    rows = query(ledger, "SELECT sha256, reason FROM cycles WHERE slot=? AND candle_ms>?", (SLOT, seen))
    assert rows and all(row["sha256"] == good_sha and row["reason"] == "good" for row in rows), rows

    # 2. Counting only from its third cycle on: the smoke evaluation cannot see it, the cycle does.
    write_atomic(strategies_dir / "counter.py", stateful_source(*STATEFUL["class attribute"], after=3))
    r = k.result(k.send("reload", args={"strategy": "counter"}))
    assert r["result"] == "applied", r
    st = k.wait(lambda s: k.slot(s, SLOT)["fault"], what="the slot faulted by its state change")
    s = k.slot(st, SLOT)
    assert s["state"] == "paused" and "module-level state" in s["fault"], s
    rows = query(ledger, "SELECT result, reason FROM cycles WHERE slot=? AND sha256=? ORDER BY candle_ms",
                 (SLOT, st["strategies"]["counter"]["sha256"]))
    assert [row["reason"] for row in rows[:2]] == ["stateful", "stateful"], rows
    assert rows[2]["result"] == "fault", rows
    others = [o["id"] for o in st["slots"] if o["id"] != SLOT]
    before = {o["id"]: o["cycles"] for o in st["slots"]}
    st = k.wait(lambda s: all(k.slot(s, o)["cycles"] >= before[o] + 1 for o in others), what="others trading")
    assert all(k.slot(st, o)["state"] == "active" for o in others)
    assert k.alive()


def test_a_symlinked_strategy_is_refused_by_reload_slot_add_and_slot_configure(kernels, strategies_dir, tmp_path):
    marker = tmp_path / "outside-code-ran"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.py").write_text(marker_source(str(marker)))
    (outside / "evil_helper.py").write_text(f"open({str(marker)!r}, 'w').close()\nTAG = 'x'\n")
    (strategies_dir / "evil.py").symlink_to(outside / "evil.py")
    (strategies_dir / "evil_helper.py").symlink_to(outside / "evil_helper.py")
    (strategies_dir / "uses_evil.py").write_text(tagged_hold_source(tag="u1", helper="evil_helper"))
    k = kernels(strategies=strategies_dir)
    st = k.wait(lambda s: k.slot(s, SLOT)["cycles"] >= 1, what="a first cycle")
    before = k.slot(st, SLOT)["strategy"]
    symlink = f"{strategies_dir.name}/evil.py is a symlink: only regular files inside {strategies_dir.name}/ load"

    r = k.result(k.send("reload", args={"strategy": "evil"}))
    assert r["result"] == "rejected" and "evil: load:" in r["error"] and symlink in r["error"], r
    r = k.result(k.send("reload", args={"strategy": "uses_evil"}))
    assert r["result"] == "rejected" and "evil_helper.py is a symlink" in r["error"], r

    r = k.result(k.send("slot.add", "evil-5m", {
        "id": "evil-5m", "symbol": "BTC/USDT", "timeframe": "5m", "strategy": "evil", "params": {},
        "order_notional": 500.0, "max_notional": 2000.0}))
    assert r["result"] == "rejected" and symlink in r["error"], r
    r = k.result(k.send("slot.configure", SLOT, {"strategy": "evil", "params": {}}))
    assert r["result"] == "rejected" and symlink in r["error"], r

    st = k.next_status()
    assert "evil" not in st["strategies"] and "uses_evil" not in st["strategies"]
    assert all(s["id"] != "evil-5m" for s in st["slots"])
    assert k.slot(st, SLOT)["strategy"] == before
    assert not marker.exists(), "code outside strategies/ ran"
    assert k.alive()
