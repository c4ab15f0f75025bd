"""Issue 15, item 3: a halt's id and a reload's id on the kernel's lines made off the command stream.

A real ``runkernel`` writing JSON logs. A reload's check-and-swap runs on the reload thread: its
line there names the reload command. A halt written by hand into control.json (as
docs/control-plane.md tells a human to) halts whether or not its block has an ``id``; with
one, the kernel's "HALT engaged" line, the cancel sweep's line (on its own thread) and
status.json's halt block name it, and control.json parsing hands it over (kernel/control.py).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kernel.control import read_control, set_halt
from tests.support.kernel_process import WAIT_S, KernelProcess, kernel_env, runkernel_args
from tests.support.status_reader import read_status
from tests.support.strategy_folders import copy_repo_strategies
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration]


def write_control_by_hand(state_dir: Path, content: dict) -> None:
    """As a human at 3am would (docs/control-plane.md): a temp file moved under the lock."""
    (state_dir / "control.tmp").write_text(json.dumps(content))
    subprocess.run(["flock", "-w", "5", "control.lock", "mv", "control.tmp", "control.json"], cwd=state_dir,
                   check=True)


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_halt_block_id_is_read_and_a_malformed_or_missing_one_still_halts(tmp_path: Path):
    set_halt(tmp_path, "runaway orders", by="alice", command_id="halt-20261207T234102.5Z-1a2b")
    written = json.loads((tmp_path / "control.json").read_text())["halt"]
    assert (written["id"], written["reason"], written["by"]) == ("halt-20261207T234102.5Z-1a2b", "runaway orders",
                                                                  "alice")
    read = read_control(tmp_path / "control.json")
    assert (read.halt, read.halt_id, read.halt_reason) == (True, "halt-20261207T234102.5Z-1a2b", "runaway orders")

    for halt in ({"reason": "no id"}, {"id": 42}, {"id": "has a space"}, {"id": ""}, True, "stop"):
        (tmp_path / "control.json").write_text(json.dumps({"halt": halt}))
        read = read_control(tmp_path / "control.json")
        assert (read.halt, read.halt_id) == (True, None), halt

    # A file that does not validate still halts, and still names the halt's id.
    (tmp_path / "control.json").write_text(json.dumps({"halt": {"id": "h-1"}, "unknown": 1}))
    read = read_control(tmp_path / "control.json")
    assert (read.halt, read.halt_id, read.error is not None) == (True, "h-1", True)
    # halt: false names no halt, whatever it says.
    (tmp_path / "control.json").write_text(json.dumps({"halt": False}))
    assert read_control(tmp_path / "control.json").halt_id is None

    before = (tmp_path / "control.json").read_bytes()
    with pytest.raises(ValueError, match="not a command id"):
        set_halt(tmp_path, "x", command_id="no spaces allowed")
    assert (tmp_path / "control.json").read_bytes() == before


def test_a_reload_thread_line_and_a_hand_written_halt_name_their_ids(tmp_path: Path):
    state_dir = tmp_path / "state"
    strategies = tmp_path / "strategies"
    copy_repo_strategies(strategies)
    log_path = tmp_path / "kernel.log"
    kernel = KernelProcess(state_dir, runkernel_args(demo=True, speed=600, strategies_dir=strategies,
                                                     extra=["--log-format", "json"]),
                           env=kernel_env(), log_path=log_path).start()
    try:
        # A reload of changed code: the reload thread's line names the reload command.
        with (strategies / "ema_cross.py").open("a") as f:
            f.write("\n# a new version: same code, new bytes\n")
        reload_id = kernel.send("reload", args={"strategy": "ema_cross"})
        result = kernel.result(reload_id)
        assert result["result"] == "applied", result
        on_reload_thread = [line for line in json_lines(log_path) if line["thread"] == "reload"]
        assert [(line["command_id"], line["msg"].split(":")[0]) for line in on_reload_thread] == [
            (reload_id, "reload ema_cross")]
        assert "passed its checks" in on_reload_thread[0]["msg"]

        # A halt by hand without an id: halted all the same, no id anywhere.
        write_control_by_hand(state_dir, {"halt": {"reason": "no id by hand"}})
        status = kernel.wait(lambda st: st["state"] == "halted" and st["halt"].get("flushed_at") and st,
                             what="the first halt")
        assert "command_id" not in status["halt"] and status["halt"]["reason"] == "no id by hand"
        engaged = [line for line in json_lines(log_path) if line["msg"].startswith("HALT engaged")]
        assert len(engaged) == 1 and "command_id" not in engaged[0]

        release_id = kernel.send("release")
        assert kernel.result(release_id)["result"] == "applied"
        kernel.wait(lambda st: not st["halt"]["engaged"], what="the release")
        released = [line for line in json_lines(log_path) if line["msg"].startswith("HALT released")]
        assert [(line["command_id"], line.get("halt_id")) for line in released] == [(release_id, None)]

        # A halt by hand with an id: engaged line, sweep line and status.json name it.
        write_control_by_hand(state_dir, {"halt": {"id": "h-by-hand-2", "reason": "with an id"}})
        status = kernel.wait(lambda st: st["state"] == "halted" and st["halt"].get("flushed_at") and st,
                             what="the second halt")
        assert (status["halt"]["command_id"], status["halt"]["reason"]) == ("h-by-hand-2", "with an id")
        lines = wait_until(
            lambda: (lambda found: found if any(x["msg"].startswith("HALT: cancelled") for x in found) else None)(
                [line for line in json_lines(log_path) if "h-by-hand-2" in json.dumps(line)]),
            timeout=WAIT_S, what="the second halt's lines")
        assert {line["command_id"] for line in lines} == {"h-by-hand-2"}
        assert [line["thread"] for line in lines if line["msg"].startswith("HALT: cancelled")] == ["halt-cancel"]
        assert len([line for line in lines if line["msg"].startswith("HALT engaged")]) == 1
        assert read_status(state_dir)["halt"]["command_id"] == "h-by-hand-2"
    finally:
        kernel.cleanup()
