"""The release store across real ``runkernel`` restarts (issue 11): a restart with a broken
strategy file on disk keeps every slot trading the stored version and reports the drift;
version numbers stay those of the code; rollback to v1 after a restart; a store entry cut by
a ``kill -9`` mid-write is never used half-written."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kernel.release_store import VERSIONS_DIR, entry_verify, store_list
from tests.support.checkout import REPO
from tests.support.kernel_process import kernel_env
from tests.support.ledger_reader import sqlite_rows as query

from .conftest import add_flip_slots

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _flip(st: dict) -> dict:
    return st["strategies"]["flip"]


def test_a_restart_with_a_broken_file_keeps_every_slot_trading_the_stored_version(kernels, strategies_dir):
    k = kernels(strategies=strategies_dir, demo=False)
    slots = add_flip_slots(k, 4)
    st = k.wait(lambda s: s["ledger"]["fills"] >= 8, what="orders flowing")
    v1 = _flip(st)["sha256"]
    assert _flip(st)["version"] == 1
    flip = strategies_dir / "flip.py"
    flip.write_text(flip.read_text() + "\n# v2\n")
    r = k.ok("reload", args={"strategy": "flip"})
    assert r["detail"]["strategies"][0]["result"] == "loaded", r
    st = k.wait(lambda s: _flip(s)["version"] == 2, what="v2 current")
    v2 = _flip(st)["sha256"]
    assert k.terminate() == 0

    flip.write_text("def evaluate(ctx:\n")  # an edit in progress: a syntax error
    k2 = kernels(k.state_dir, strategies=strategies_dir, demo=False)
    st = k2.first_status
    assert (_flip(st)["version"], _flip(st)["sha256"]) == (2, v2)
    assert _flip(st)["working_tree"]["differs"] is True
    assert all(k2.slot(st, s)["fault"] is None for s in slots)
    ledger = k2.state_dir / "ledger.sqlite3"
    before = {s: k2.slot(st, s)["cycles"] for s in slots}
    st = k2.wait(lambda s: all(k2.slot(s, x)["cycles"] >= before[x] + 2 for x in slots),
                 what="every slot trading after the restart")
    assert all(k2.slot(st, s)["last_cycle_sha256"] == v2 and k2.slot(st, s)["fault"] is None for s in slots)
    assert {r["sha256"] for r in query(ledger, "SELECT DISTINCT sha256 FROM cycles")} == {v1, v2}
    assert _flip(st)["working_tree"]["differs"] is True  # still reported, nothing changed by itself

    # Rollback to v1 after the restart: from the store, with its number.
    r = k2.ok("rollback", args={"strategy": "flip", "version": 1})
    assert r["detail"]["result"] == "rolled_back", r
    st = k2.wait(lambda s: _flip(s)["version"] == 1, what="v1 current again")
    assert _flip(st)["sha256"] == v1 and _flip(st)["previous"] == {"version": 2, "sha256": v2}
    k2.wait(lambda s: all(k2.slot(s, x)["last_cycle_sha256"] == v1 for x in slots), what="v1 trading")
    # A reload of the broken working tree is refused; v1 keeps running.
    r = k2.call("reload", args={"strategy": "flip"})
    assert r["result"] == "rejected" and "import" in r["error"]
    numbers = {m["sha256"]: m["number"] for m in store_list(k2.state_dir / VERSIONS_DIR, "flip")}
    assert numbers == {v1: 1, v2: 2}


def test_a_store_entry_cut_by_kill_9_is_never_used_half_written(kernels, strategies_dir):
    k = kernels(strategies=strategies_dir, demo=False, env={"FORESIGHT_CRASH_AT": "store_partial:1"})
    k.send("slot.add", "btc-5m", {"id": "btc-5m", "symbol": "BTC/USDT", "timeframe": "5m", "strategy": "flip",
                                  "order_notional": 500.0, "max_notional": 2000.0})
    k.proc.wait(60)  # the kernel kills itself with the flip entry half-written
    assert k.proc.returncode == -9, k.log_tail()
    root = k.state_dir / VERSIONS_DIR
    partial = [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert len(partial) == 1 and store_list(root) == []
    k2 = kernels(k.state_dir, strategies=strategies_dir, demo=False)
    assert not partial[0].exists()
    st = k2.wait(lambda s: "flip" in s["strategies"], what="the slot.add applied after the restart")
    sha = _flip(st)["sha256"]
    assert _flip(st)["version"] == 1 and entry_verify(root, sha)["number"] == 1
    assert [p.name for p in root.iterdir()] == [sha]


def kernelctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "kernelctl", *args], cwd=REPO, env=kernel_env(settings="foresight_site.settings"),
        capture_output=True, text=True, timeout=60,
    )


def test_kernelctl_lists_the_store_and_diffs_two_versions(kernels, strategies_dir):
    k = kernels(strategies=strategies_dir, demo=False)
    add_flip_slots(k, 1)
    flip = strategies_dir / "flip.py"
    flip.write_text(flip.read_text() + "\n# v2\n")
    k.ok("reload", args={"strategy": "flip"})
    st = k.wait(lambda s: _flip(s)["version"] == 2, what="v2 current")
    v2 = _flip(st)["sha256"]
    out = kernelctl("--state-dir", str(k.state_dir), "versions", "flip", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["number"], r["current"]) for r in rows] == [(1, False), (2, True)]
    assert rows[1]["sha256"] == v2 and rows[1]["by"] == "integration-test" and rows[1]["commit"] == "uncommitted"
    human = kernelctl("--state-dir", str(k.state_dir), "versions", "flip")
    assert human.returncode == 0 and f"v2    {v2[:12]}" in human.stdout and "* current" in human.stdout
    diff = kernelctl("--state-dir", str(k.state_dir), "diff", "flip", "1", v2[:8])
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.startswith("--- v1/flip.py\n+++ v2/flip.py\n") and "\n+# v2\n" in diff.stdout
    bad = kernelctl("--state-dir", str(k.state_dir), "diff", "flip", "1", "7")
    assert bad.returncode != 0 and "no stored version 7 of flip" in bad.stderr
