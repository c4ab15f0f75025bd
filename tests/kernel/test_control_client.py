"""kernel.control_client: results read back from the kernel's ledger, read-only
(status.json lists only the latest ones)."""
from __future__ import annotations

import sqlite3

import pytest

from kernel import control_client
from kernel.ledger import LEDGER_FILE, Ledger
from kernel.protocol import CommandStatus


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / LEDGER_FILE)
    yield led
    led.close()


def test_stored_results_come_from_the_ledger_whatever_their_number(tmp_path, ledger):
    ids = [f"c-{i}" for i in range(1200)]  # more than one chunk of bound parameters
    for i, cid in enumerate(ids):
        ledger.record_command(id=cid, action="slot.pause", slot="btc-5m", result="applied", error=None,
                              at="2024-01-01T00:00:00.000Z", detail={"n": i} if i % 2 else None)
    ledger.record_command(id="r-1", action="rollback", slot=None, result="rejected", error="no previous version",
                          at="2024-01-01T00:00:01.000Z")

    found = control_client.stored_results(tmp_path, [*ids, "r-1", "unknown"])

    assert set(found) == {*ids, "r-1"}
    assert found["c-1"] == CommandStatus(id="c-1", action="slot.pause", slot="btc-5m", result="applied",
                                         error=None, at="2024-01-01T00:00:00.000Z", detail={"n": 1})
    assert found["c-0"].detail is None
    assert (found["r-1"].result, found["r-1"].error, found["r-1"].slot) == ("rejected", "no previous version", None)


def test_stored_results_are_empty_without_a_ledger_or_ids(tmp_path, ledger):
    ledger.record_command(id="c-1", action="pause", slot=None, result="applied", error=None,
                          at="2024-01-01T00:00:00.000Z")
    assert control_client.stored_results(tmp_path, []) == {}
    assert control_client.stored_results(tmp_path / "elsewhere", ["c-1"]) == {}


def test_a_read_only_ledger_never_writes(tmp_path, ledger):
    ledger.record_command(id="c-1", action="pause", slot=None, result="applied", error=None,
                          at="2024-01-01T00:00:00.000Z")
    reader = Ledger(tmp_path / LEDGER_FILE, read_only=True)
    try:
        assert set(reader.command_results(["c-1", "c-2"])) == {"c-1"}
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.record_command(id="c-2", action="pause", slot=None, result="applied", error=None,
                                  at="2024-01-01T00:00:00.000Z")
    finally:
        reader.close()
    assert set(ledger.command_results(["c-1", "c-2"])) == {"c-1"}
    with pytest.raises(sqlite3.OperationalError):
        Ledger(tmp_path / "missing.sqlite3", read_only=True)  # never creates one
    assert not (tmp_path / "missing.sqlite3").exists()


def test_an_unreadable_ledger_concludes_nothing(tmp_path):
    (tmp_path / LEDGER_FILE).write_bytes(b"not a database at all" * 100)
    assert control_client.stored_results(tmp_path, ["c-1"]) == {}


def test_waits_take_a_missing_or_unreadable_status_for_not_yet(tmp_path):
    # No status.json yet (a kernel still starting): a wait times out with None, never raises.
    assert control_client.wait_state(tmp_path, {"halted"}, timeout_s=0.1, poll_s=0.01) is None
    assert control_client.wait_result(tmp_path, "c-1", timeout_s=0.1, poll_s=0.01) is None
    (tmp_path / "status.json").write_text("{torn")
    assert control_client.wait_state(tmp_path, {"halted"}, timeout_s=0.1, poll_s=0.01) is None


def test_waits_return_what_status_json_says_once_it_says_it(tmp_path):
    from kernel.control import atomic_write_json
    status = {"protocol": 1, "state": "halted", "heartbeat_at": "2024-01-01T00:00:00.000Z", "tick": 3,
              "pid": 1, "commands": [{"id": "c-1", "action": "pause", "slot": None, "result": "applied",
                                      "error": None, "at": "2024-01-01T00:00:00.000Z", "detail": None}]}
    atomic_write_json(tmp_path / "status.json", status)
    assert control_client.wait_state(tmp_path, {"halted"}, timeout_s=1, poll_s=0.01).tick == 3
    assert control_client.wait_result(tmp_path, "c-1", timeout_s=1, poll_s=0.01)["result"] == "applied"
    assert control_client.wait_state(tmp_path, {"running"}, timeout_s=0.1, poll_s=0.01) is None


def test_the_default_actor_is_the_real_user_whatever_the_environment_says(monkeypatch):
    import pwd
    import os
    monkeypatch.setenv("LOGNAME", "mallory")
    monkeypatch.setenv("USER", "mallory")
    assert control_client.default_actor().split("@")[0] == pwd.getpwuid(os.getuid()).pw_name != "mallory"
