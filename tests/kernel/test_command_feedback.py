"""What the operator reads after a command (issue 14, item 7): a reload says old → new version
and sha256, a flatten its fill price and the realised P&L of the round trip it closed, a
command written by hand keeps the ``issued_by`` it gives."""
from __future__ import annotations

import hashlib

from kernel.control import append_commands
from kernel.protocol import Command
from tests.kernel.kernel_driver import M5


def _sha_of(folder, name: str) -> str:
    """A version's sha256 worked out from its source, as docs/strategies.md defines it."""
    text = (folder / f"{name}.py").read_bytes()
    files = {f"{name}.py": hashlib.sha256(text).hexdigest()}
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f"{f}\0{files[f]}\n".encode())
    return h.hexdigest()


def test_a_reload_says_old_and_new_version_and_sha256(driver, strategies):
    driver.add_slot("btc-5m", "flip")
    old_sha = _sha_of(strategies, "flip")
    before = driver.kernel.snapshot()["strategies"]["flip"]
    (strategies / "flip.py").write_text((strategies / "flip.py").read_text() + "\n# a new version\n")
    new_sha = _sha_of(strategies, "flip")
    assert new_sha != old_sha
    r = driver.command("reload", strategy="flip")
    assert r["result"] == "applied", r
    (one,) = r["detail"]["strategies"]
    assert (one["old_sha256"], one["new_sha256"]) == (old_sha, new_sha)
    assert (one["old_version"], one["version"]) == (before["version"], before["version"] + 1)
    expected = f"flip: v{before['version']} ({old_sha[:12]}) → v{before['version'] + 1} ({new_sha[:12]})"
    assert r["detail"]["message"] == expected
    # Nothing changed: it says so, with the version that still runs.
    r = driver.command("reload", strategy="flip")
    assert r["detail"]["message"] == f"flip: unchanged, still v{before['version'] + 1} ({new_sha[:12]})"


def test_a_rollback_says_which_version_it_went_back_to(driver, strategies):
    driver.add_slot("btc-5m", "flip")
    old_sha = _sha_of(strategies, "flip")
    (strategies / "flip.py").write_text((strategies / "flip.py").read_text() + "\n# v2\n")
    new_sha = _sha_of(strategies, "flip")
    assert driver.command("reload", strategy="flip")["result"] == "applied"
    r = driver.command("rollback", strategy="flip")
    assert r["result"] == "applied", r
    assert r["detail"]["message"].startswith(f"flip: v2 ({new_sha[:12]}) → v1 ({old_sha[:12]})")


def test_a_flatten_says_its_fill_price_and_the_round_trips_pnl(driver):
    driver.add_slot("btc-5m", "flip")
    driver.advance(M5)  # enters
    k = driver.kernel
    (entry,) = k.ledger.fills("btc-5m")
    r = driver.command("slot.flatten", "btc-5m")
    assert r["result"] == "applied", r
    exit_ = [f for f in k.ledger.fills("btc-5m") if f["side"] == "sell"]
    assert len(exit_) == 1 and exit_[0]["qty"] == entry["qty"]
    # By hand: what the sell brought minus what the buy cost, both fees included.
    pnl = entry["qty"] * (exit_[0]["price"] - entry["price"]) - entry["fee"] - exit_[0]["fee"]
    d = r["detail"]
    assert d["fill_price"] == exit_[0]["price"]
    assert abs(d["realized_pnl"] - pnl) < 1e-9
    assert d["message"] == (f"btc-5m: sold {entry['qty']:.10g} at {exit_[0]['price']:.10g}; "
                            f"round trip P&L {d['realized_pnl']:+.10g}")
    assert abs(float(d["message"].rsplit(" ", 1)[1]) - pnl) < 1e-6


def test_a_rejected_command_carries_the_kernels_reason_and_a_hand_written_issued_by(driver):
    append_commands(driver.state_dir, [Command(id="hand-1", action="slot.pause", slot="nope",
                                               issued_by="alice on the night shift")])
    driver.settle()
    r = driver.result("hand-1")
    assert (r["result"], r["error"]) == ("rejected", "unknown slot 'nope'")
    assert r["detail"] == {"issued_by": "alice on the night shift"}
    assert driver.kernel.ledger.command_result("hand-1")["detail"]["issued_by"] == "alice on the night shift"
