"""The release store (kernel/release_store.py) in an in-process kernel: every version stored
before it goes live, numbers that name one code forever, a restart that resumes the stored
versions whatever the working tree holds (and reports the drift), rollback to any stored
version, a corrupt or half-written entry never used, prune only on command."""
from __future__ import annotations

import hashlib
import json

from kernel.release_drift import WorkingTree
from kernel.release_store import VERSIONS_DIR, store_diff, store_list, store_resolve
from tests.kernel.kernel_driver import M5
from tests.support.strategy_sources import HELPER_SYNTAX_ERROR, bare_helper_source, tagged_hold_source


def _write(strategies, tag: str) -> None:
    (strategies / "tagged.py").write_text(tagged_hold_source(tag=tag))
    (strategies / "tag_helper.py").write_text(bare_helper_source(tag=tag))


def _reload(driver, **args) -> dict:
    r = driver.command("reload", strategy="tagged", **args)
    assert r["result"] == "applied", r
    return r["detail"]["strategies"][0]


def _running(driver) -> tuple[int, str]:
    v = driver.kernel.registry.get("tagged")
    return v.number, v.sha256


def test_every_version_is_stored_before_it_goes_live_with_its_manifest(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    root = driver.state_dir / VERSIONS_DIR
    n1, sha1 = _running(driver)
    m = json.loads((root / sha1 / "manifest.json").read_text())
    assert (m["strategy"], m["sha256"], m["number"], n1) == ("tagged", sha1, 1, 1)
    assert set(m["files"]) == {"tagged.py", "tag_helper.py"}
    for name, sha in m["files"].items():
        data = (root / sha1 / name).read_bytes()
        assert data == (strategies / name).read_bytes() and hashlib.sha256(data).hexdigest() == sha
    assert m["commit"] == "uncommitted"  # the test's strategies folder is no git work tree
    assert m["first_loaded_at"] and "command_id" in m and "by" in m
    _write(strategies, "v2")
    r = _reload(driver)
    n2, sha2 = _running(driver)
    assert (r["result"], r["version"], n2) == ("loaded", 2, 2)
    assert json.loads((root / sha2 / "manifest.json").read_text())["command_id"] == r["command_id"]
    assert [e["number"] for e in store_list(root, "tagged")] == [1, 2]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_number_names_one_code_through_reload_rollback_and_restart(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    _, sha1 = _running(driver)
    _write(strategies, "v2")
    _reload(driver)
    _, sha2 = _running(driver)
    _write(strategies, "v1")  # the first code again: the same sha256, the same number
    r = _reload(driver)
    assert _running(driver) == (1, sha1) and r["version"] == 1
    _write(strategies, "v2")
    _reload(driver)
    assert _running(driver) == (2, sha2)
    assert driver.command("rollback", strategy="tagged")["result"] == "applied"
    assert _running(driver) == (1, sha1)
    driver.restart()
    assert _running(driver) == (1, sha1)  # what ran, not the working tree's v2
    _write(strategies, "v3")
    _reload(driver)
    assert _running(driver)[0] == 3
    driver.restart()
    assert _running(driver)[0] == 3
    st = driver.kernel.snapshot()["strategies"]["tagged"]
    assert st["version"] == 3 and st["working_tree"] == {"sha256": st["sha256"], "differs": False}


def test_a_restart_with_a_broken_file_resumes_the_stored_version_and_reports_the_drift(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    _write(strategies, "v2")
    _reload(driver)
    n2, sha2 = _running(driver)
    (strategies / "tag_helper.py").write_text(HELPER_SYNTAX_ERROR)  # an edit in progress
    driver.restart()
    assert _running(driver) == (n2, sha2)
    assert driver.slot("btc-5m")["fault"] is None
    driver.advance(M5)
    last = driver.cycles("btc-5m")[-1]
    assert (last["sha256"], last["reason"]) == (sha2, "v2|v2")
    wt = driver.kernel.snapshot()["strategies"]["tagged"]["working_tree"]
    assert wt["differs"] is True and wt["sha256"] != sha2
    (strategies / "tag_helper.py").unlink()
    assert driver.kernel.snapshot()["strategies"]["tagged"]["working_tree"] == {"sha256": None, "differs": True}
    _write(strategies, "v2")
    assert driver.kernel.snapshot()["strategies"]["tagged"]["working_tree"] == {"sha256": sha2, "differs": False}


def test_rollback_to_any_stored_version_after_a_restart(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    _, sha1 = _running(driver)
    _write(strategies, "v2")
    _reload(driver)
    _write(strategies, "v3")
    _reload(driver)
    _, sha3 = _running(driver)
    driver.restart()
    assert driver.kernel.registry.previous == {}
    r = driver.command("rollback", strategy="tagged", version=1)
    assert r["result"] == "applied" and r["detail"]["result"] == "rolled_back", r
    assert _running(driver) == (1, sha1)
    driver.advance(M5)
    assert driver.cycles("btc-5m")[-1]["reason"] == "v1|v1"
    r = driver.command("rollback", strategy="tagged", sha256=sha3[:10])
    assert r["result"] == "applied" and _running(driver) == (3, sha3)
    # Without a version, after a restart: the previous one the ledger's meta remembers.
    driver.restart()
    assert driver.command("rollback", strategy="tagged")["result"] == "applied"
    assert _running(driver) == (1, sha1)
    snap = driver.kernel.snapshot()["strategies"]["tagged"]
    assert snap["previous"] == {"version": 3, "sha256": sha3}


def test_bad_rollback_input_is_rejected_and_changes_nothing(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    _write(strategies, "v2")
    _reload(driver)
    before = _running(driver)
    for args, says in (({"version": 9}, "no stored version 9 of tagged"),
                       ({"sha256": "abcdef0123"}, "no stored version of tagged with sha256 abcdef0123"),
                       ({"sha256": "zz"}, "neither a version number nor a sha256"),
                       ({"version": "1"}, "is not a version number"),
                       ({"version": True}, "is not a version number"),
                       ({"version": 1, "sha256": before[1]}, "not both")):
        r = driver.command("rollback", strategy="tagged", **args)
        assert r["result"] == "rejected" and says in r["error"], (args, r)
        assert _running(driver) == before
    r = driver.command("rollback", strategy="tagged", version=2)
    assert r["result"] == "applied" and "already runs version 2" in r["detail"]["note"]


def test_a_corrupt_store_entry_is_refused_and_reported_never_loaded(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    _, sha1 = _running(driver)
    _write(strategies, "v2")
    _reload(driver)
    before = _running(driver)
    stored = driver.state_dir / VERSIONS_DIR / sha1 / "tag_helper.py"
    stored.write_text('TAG = "tampered"\n')
    r = driver.command("rollback", strategy="tagged", version=1)
    assert r["result"] == "rejected" and "corrupt" in r["error"], r
    assert _running(driver) == before
    # The running version's entry corrupt at a restart: its slots fault with the reason; the
    # working tree is never loaded in its place.
    (driver.state_dir / VERSIONS_DIR / before[1] / "tagged.py").write_text("# tampered\n")
    driver.restart()
    assert driver.kernel.registry.get("tagged") is None
    assert "corrupt" in driver.slot("btc-5m")["fault"]
    assert driver.kernel.snapshot()["reload"]["result"] == "failed"


def test_a_half_written_entry_is_never_used_and_is_cleaned_up(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    root = driver.state_dir / VERSIONS_DIR
    leftover = root / ".tmp-0123456789abcdef-deadbeef"
    leftover.mkdir()
    (leftover / "tagged.py").write_text("raise SystemExit('never run')\n")
    assert [e["sha256"] for e in store_list(root)] == [_running(driver)[1]]
    driver.restart()
    assert not leftover.exists() and driver.kernel.reloader.store.cleaned == [leftover.name]
    assert _running(driver)[0] == 1


def test_prune_only_on_command_keeps_what_is_referenced(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    shas = [_running(driver)[1]]
    for tag in ("v2", "v3", "v4", "v5"):
        _write(strategies, tag)
        _reload(driver)
        shas.append(_running(driver)[1])
    root = driver.state_dir / VERSIONS_DIR
    assert len(store_list(root, "tagged")) == 5  # never pruned by itself
    for args, says in (({"keep": 0}, "keep must be an integer >= 1"), ({"keep": "2"}, "keep must be"),
                       ({"every": True}, "takes args strategy and keep")):
        r = driver.command("versions.prune", **args)
        assert r["result"] == "rejected" and says in r["error"], r
    r = driver.command("versions.prune", strategy="tagged", keep=1)
    assert r["result"] == "applied", r
    # v5 runs (and is the newest), v4 is the previous one: both kept.
    assert [e["number"] for e in store_list(root, "tagged")] == [4, 5]
    assert sorted(x["version"] for x in r["detail"]["removed"]) == [1, 2, 3]
    # A pruned code published again keeps its number.
    _write(strategies, "v2")
    assert _reload(driver)["version"] == 2


def test_rollback_to_a_version_is_refused_during_a_halt(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    _write(strategies, "v2")
    _reload(driver)
    driver.kernel.engage_halt("test", source="test")
    r = driver.command("rollback", strategy="tagged", version=1)
    assert r["result"] == "rejected" and r["error"].startswith("halted: release the halt first")
    assert _running(driver)[0] == 2


def test_resolve_and_diff_read_the_store(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    _write(strategies, "v2")
    _reload(driver)
    root = driver.state_dir / VERSIONS_DIR
    sha2 = _running(driver)[1]
    assert store_resolve(root, "tagged", "v2")["sha256"] == sha2
    assert store_resolve(root, "tagged", sha2[:8])["number"] == 2
    text = store_diff(root, "tagged", 1, sha2[:8])
    assert '--- v1/tag_helper.py\n+++ v2/tag_helper.py\n' in text
    assert '-TAG = "v1"\n+TAG = "v2"\n' in text


def test_the_working_tree_is_hashed_again_only_when_a_file_changed(tmp_path, driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    v = driver.kernel.registry.get("tagged")
    tree = WorkingTree(strategies)
    assert tree.describe(v) == {"sha256": v.sha256, "differs": False}
    _write(strategies, "v9")
    assert tree.describe(v)["differs"] is True
