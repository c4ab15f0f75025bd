"""control.json abuse: torn, empty, non-JSON, wrong-typed and unknown-action files never
stop the kernel and never get half-applied; a torn file that asks for a halt halts.
Eight processes appending 100 commands each at once: all 800 applied exactly once, in
each writer's order."""
from __future__ import annotations

import sys
import textwrap

import pytest

from kernel.control import atomic_write_text
from tests.support.kernel_process import WAIT_S, kernel_env
from tests.support.ledger_reader import sqlite_rows as query
from tests.support.processes import log_tail, spawn

pytestmark = pytest.mark.integration


def applied_ids(k) -> set[str]:
    return {r["id"] for r in query(k.state_dir / "ledger.sqlite3", "SELECT id FROM commands")}


BAD_FILES = [
    # (name, raw text, words expected in control_error; the file names the commands bad-*)
    ("torn", '{"halt": false, "commands": [{"id": "bad-torn-1", "action": "pause"}, {"id": "bad-torn-2", "ac',
     "not valid JSON"),
    ("torn-early", '{"halt": false, "commands": [', "not valid JSON"),
    ("not-json", 'halt: false\ncommands:\n  - {id: bad-yaml-1, action: pause}\n', "not valid JSON"),
    ("wrong-type", '{"halt": false, "commands": "x"}', "commands"),
    ("not-an-object", '[{"id": "bad-list-1", "action": "pause"}]', "JSON object"),
    ("unknown-key", '{"halt": false, "commands": [{"id": "bad-key-1", "action": "pause"}], "comands": []}',
     "unknown key"),
    ("bad-command", '{"commands": [{"id": "bad-cmd-1", "action": "pause"}, {"action": "resume"}]}',
     "field required"),
    ("duplicate-ids", '{"commands": [{"id": "bad-dup", "action": "pause"}, {"id": "bad-dup", "action": "pause"}]}',
     "duplicate command id"),
]


def test_bad_control_files_are_reported_and_nothing_of_them_is_applied(kernels):
    k = kernels()
    path = k.state_dir / "control.json"
    pid = k.pid
    for i, (name, text, words) in enumerate(BAD_FILES):
        atomic_write_text(path, text)
        st = k.wait(lambda s: s["control_error"] and words in s["control_error"], what=f"{name}: control_error")
        assert st["state"] == "running" and st["pid"] == pid, (name, st["state"])
        assert st["pending_commands"] == []
        # Fixed by hand: the error clears and the new file's commands are applied.
        probe = f"probe-{i}"
        atomic_write_text(path, '{"halt": false, "commands": [{"id": "%s", "action": "slot.pause", "slot": "btc-5m"}]}'
                          % probe)
        assert k.result(probe)["result"] == "applied"
        st = k.wait(lambda s: s["control_error"] is None, what=f"{name}: control_error cleared")
        assert st["state"] == "running" and not st["halt"]["engaged"]
    assert not {c for c in applied_ids(k) if c.startswith("bad-")}, "nothing from a bad file was applied"
    assert k.status()["state"] == "running", "no 'pause' from a bad file took effect"

    # An empty file is not an error: nothing to do.
    atomic_write_text(path, "")
    st = k.wait_ticks(5)
    assert st["control_error"] is None and st["state"] == "running"

    # An unknown action is rejected on its own; the file's other commands are applied.
    atomic_write_text(path, '{"commands": [{"id": "u-1", "action": "frobnicate"},'
                            ' {"id": "u-2", "action": "slot.resume", "slot": "btc-5m"},'
                            ' {"id": "u-3", "action": "slot.pause", "slot": "no-such-slot"}]}')
    r1, r2, r3 = k.result("u-1"), k.result("u-2"), k.result("u-3")
    assert r1["result"] == "rejected" and "unknown action 'frobnicate'" in r1["error"], r1
    assert r2["result"] == "applied", r2
    assert r3["result"] == "rejected" and r3["error"] == "unknown slot 'no-such-slot'", r3
    st = k.wait(lambda s: any(c["id"] == "u-3" for c in s["commands"]), what="u-* results in status")
    assert st["control_error"] is None and k.slot(st, "btc-5m")["state"] == "active"

    # In doubt, stop: a torn file whose halt key is not false halts (and applies nothing).
    atomic_write_text(path, '{"halt": true, "commands": [{"id": "bad-torn-halt", "action": "resume"}, {"id')
    st = k.wait(lambda s: s["state"] == "halted", what="a torn halt")
    assert st["control_error"] and "not valid JSON" in st["control_error"]
    assert "bad-torn-halt" not in applied_ids(k)
    assert k.alive() and st["pid"] == pid


WRITER = textwrap.dedent('''
    import sys
    from kernel import control_client as ctl
    state_dir, w, slot = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    for i in range(100):
        action = "slot.pause" if i % 2 == 0 else "slot.resume"
        ctl.send(state_dir, ctl.build_command(action, slot, {}, command_id=f"w{w}-{i:03d}",
                                              issued_by=f"writer-{w}"))
''')


def test_eight_writers_at_once_every_command_applied_exactly_once_in_order(kernels, tmp_path):
    k = kernels()
    slots = [s["id"] for s in k.status()["slots"]][:8]
    logs = [tmp_path / f"writer-{w}.log" for w in range(8)]
    writers = [spawn([sys.executable, "-c", WRITER, str(k.state_dir), str(w), slots[w]], env=kernel_env(),
                     log_path=logs[w]) for w in range(8)]
    for w, log in zip(writers, logs):
        w.wait(timeout=WAIT_S * 2)
        assert w.returncode == 0, log_tail(log)
    expected = {f"w{w}-{i:03d}" for w in range(8) for i in range(100)}
    k.wait(lambda s: expected <= applied_ids(k), timeout=WAIT_S, what="all 800 commands applied")
    rows = query(k.state_dir / "ledger.sqlite3",
                 "SELECT seq, id, action, slot, result FROM commands WHERE id LIKE 'w%' ORDER BY seq")
    ids = [r["id"] for r in rows]
    assert len(ids) == 800 and set(ids) == expected, "each command exactly once"
    assert all(r["result"] == "applied" for r in rows), [r for r in rows if r["result"] != "applied"][:3]
    for w in range(8):
        mine = [r for r in rows if r["id"].startswith(f"w{w}-")]
        assert [r["id"] for r in mine] == sorted(r["id"] for r in mine), f"writer {w}'s order not kept"
        assert {r["slot"] for r in mine} == {slots[w]}
    st = k.wait_ticks(3)
    assert k.alive() and st["pid"] == k.pid and st["state"] == "running"
    assert st["control_error"] is None and st["pending_commands"] == []
    # Each writer's last command was a slot.resume: every slot ends active.
    assert all(k.slot(st, s)["state"] == "active" for s in slots)
