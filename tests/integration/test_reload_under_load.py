"""Reload under load: the demo's 16 slots trade while a strategy is reloaded 50 times at
random moments, half of them to a changed version (the strategy and its helper both
rewritten with a new TAG), half with unchanged sources.

Shown: no missed cycle, no doubled cycle, no cycle that saw two versions (its TAG from
the strategy module equals its TAG from the helper, and the TAG is the one of the version
whose sha256 the cycle recorded), every cycle's version recorded; and a changed helper
alone (strategy file untouched) makes a new version.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from kernel.control import atomic_write_text as write_atomic
from tests.support.ledger_reader import sqlite_rows as query
from tests.support.strategy_sources import tag_helper_source, tagged_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TAGGED_SLOTS = ("btc-5m", "eth-15m", "sol-5m", "doge-15m", "link-5m")
TF_MS = {"5m": 300_000, "15m": 900_000}


def write_version(folder: Path, tag: str, helper_extra: str = "") -> None:
    write_atomic(folder / "tagged.py", tagged_source(tag=tag))
    write_atomic(folder / "tag_helper.py", tag_helper_source(tag=tag, extra=helper_extra))


def test_fifty_reloads_under_load_miss_nothing_and_never_mix_versions(kernels, strategies_dir):
    write_version(strategies_dir, "v0")
    k = kernels(strategies=strategies_dir, extra=["--workers", "8"])
    st = k.status()
    assert len(st["slots"]) == 16
    for slot in TAGGED_SLOTS:
        k.ok("slot.configure", slot, {"strategy": "tagged", "params": {}})
    st = k.wait(lambda s: "tagged" in s["strategies"], what="tagged loaded")
    sha_tag = {st["strategies"]["tagged"]["sha256"]: "v0"}
    rng = random.Random(20240601)
    plan = ["changed"] * 25 + ["unchanged"] * 25
    rng.shuffle(plan)
    results = []
    for i, kind in enumerate(plan, start=1):
        k.wait_ticks(rng.randint(0, 3))  # a random moment, in the kernel's own time
        if kind == "changed":
            tag = f"v{i}"
            write_version(strategies_dir, tag)
        cid = k.send("reload", args={"strategy": "tagged"})
        r = k.result(cid)
        assert r["result"] == "applied", r
        entry = r["detail"]["strategies"][0]
        results.append(entry["result"])
        if kind == "changed":
            assert entry["result"] == "loaded", entry
            assert entry["new_sha256"] not in sha_tag, "a new TAG is a new version"
            sha_tag[entry["new_sha256"]] = tag
        else:
            assert entry["result"] == "unchanged", entry
            assert entry["new_sha256"] == entry["old_sha256"]
    assert results.count("loaded") == 25 and results.count("unchanged") == 25

    # A changed helper alone (the strategy file untouched) is a new version too. (The result
    # above may have come from the ledger: wait for status.json to show the same moment.)
    st = k.wait(lambda s: any(c["id"] == cid for c in s["commands"]), what="status.json caught up")
    before = st["strategies"]["tagged"]
    last_tag = sha_tag[before["sha256"]]
    write_atomic(strategies_dir / "tag_helper.py", tag_helper_source(tag=last_tag, extra="# only the helper changed"))
    r = k.result(k.send("reload", args={"strategy": "tagged"}))
    entry = r["detail"]["strategies"][0]
    assert entry["result"] == "loaded" and entry["new_sha256"] != before["sha256"], entry
    sha_tag[entry["new_sha256"]] = last_tag
    after = k.wait(lambda s: s["strategies"]["tagged"]["sha256"] == entry["new_sha256"])["strategies"]["tagged"]
    assert after["files"]["tagged.py"] == before["files"]["tagged.py"]
    assert after["files"]["tag_helper.py"] != before["files"]["tag_helper.py"]
    # Cycles on the newest version before stopping.
    k.wait(lambda s: any(r["sha256"] == entry["new_sha256"] for r in
                         query(k.state_dir / "ledger.sqlite3", "SELECT sha256 FROM cycles WHERE strategy='tagged'")),
           what="a cycle on the helper-only version")
    assert k.terminate() == 0
    final = k.status()
    assert final["state"] == "stopped"

    ledger = k.state_dir / "ledger.sqlite3"
    rows = query(ledger, "SELECT slot, candle_ms, strategy, sha256, result, reason FROM cycles ORDER BY slot, candle_ms")
    by_slot: dict[str, list[dict]] = {}
    for r in rows:
        by_slot.setdefault(r["slot"], []).append(r)
    assert set(by_slot) == {s["id"] for s in final["slots"]}

    # Zero missed cycles, none doubled: every close between a slot's first and last cycle
    # has exactly one row, and the kernel's own count agrees with the table.
    for s in final["slots"]:
        closes = [r["candle_ms"] for r in by_slot[s["id"]]]
        tf = TF_MS[s["timeframe"]]
        expected = list(range(closes[0], closes[-1] + tf, tf))
        assert closes == expected, f"{s['id']}: gaps at {sorted(set(expected) - set(closes))[:5]}"
        assert s["missed_cycles"] == 0, s
        assert s["cycles"] == len(closes), (s["id"], s["cycles"], len(closes))
    assert final["cycles"]["missed"] == 0
    assert final["cycles"]["ran"] == len(rows)

    # Every cycle's version is recorded; no cycle saw two versions.
    assert all(r["sha256"] for r in rows), [r for r in rows if not r["sha256"]][:3]
    tagged = [r for r in rows if r["strategy"] == "tagged"]
    assert len({r["sha256"] for r in tagged}) >= 10, "cycles ran on many of the versions"
    tag_shas: dict[str, set[str]] = {}
    for r in tagged:
        module_tag, sep, helper_tag = (r["reason"] or "").partition("|")
        assert sep and module_tag, r
        assert module_tag == helper_tag, f"cycle {r['slot']}@{r['candle_ms']} saw two versions: {r['reason']}"
        assert r["sha256"] in sha_tag, f"cycle ran an unknown version {r['sha256']}"
        assert sha_tag[r["sha256"]] == module_tag, (r, sha_tag[r["sha256"]])
        tag_shas.setdefault(module_tag, set()).add(r["sha256"])
    for tag, shas in tag_shas.items():
        allowed = {sha for sha, t in sha_tag.items() if t == tag}
        assert shas <= allowed
        assert len(shas) == 1 or tag == last_tag, (tag, shas)
