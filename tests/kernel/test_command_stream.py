"""Commands (kernel/command_stream.py): applied in file order, exactly once across a
restart, and a result that scrolled out of status.json reported again once."""
from __future__ import annotations

from kernel.control import append_commands
from kernel.protocol import Command
from tests.kernel.kernel_driver import make_driver


def test_commands_apply_in_order_once_and_are_remembered_across_a_restart(tmp_path, strategies):
    d = make_driver(tmp_path, strategies)
    try:
        d.add_slot("btc-5m", "flip")
        append_commands(d.state_dir, [
            Command(id="a1", action="slot.configure", slot="btc-5m", args={"order_notional": 111.0}),
            Command(id="a2", action="slot.configure", slot="btc-5m", args={"order_notional": 222.0}),
            Command(id="a3", action="frobnicate"),
            Command(id="a4", action="slot.pause", slot="nope"),
        ])
        d.settle()
        assert d.result("a3")["result"] == "rejected" and "unknown action 'frobnicate'" in d.result("a3")["error"]
        assert d.result("a4")["error"] == "unknown slot 'nope'"
        assert d.slot("btc-5m")["config"]["order_notional"] == 222.0
        d.restart()
        # a1 delivered again (say the console re-sent it): applied ids live in the ledger.
        append_commands(d.state_dir, [Command(id="a1", action="slot.configure", slot="btc-5m",
                                              args={"order_notional": 111.0})])
        r = d.command("slot.pause", "btc-5m")
        assert r["result"] == "applied"
        assert d.slot("btc-5m")["config"]["order_notional"] == 222.0, "a1 was not applied again"
        rows = d.kernel.ledger.recent_commands()
        assert [c["id"] for c in rows].count("a1") == 1
        assert [c["id"] for c in d.kernel.snapshot()["commands"]].count("a1") == 1
        assert "a1" not in d.kernel.snapshot()["pending_commands"]
        seqs = {c["id"]: c["seq"] for c in rows}
        assert seqs["a1"] < seqs["a2"] < seqs["a3"] < seqs["a4"]
    finally:
        d.close()


def test_a_result_that_scrolled_out_of_status_is_reported_again_once_when_resent(driver):
    """A console away for longer than status.json's memory re-sends what it never saw
    answered: the kernel reports the stored result again, and never re-applies it."""
    driver.add_slot("btc-5m", "flip")
    first = Command(id="old-1", action="slot.configure", slot="btc-5m", args={"order_notional": 123.0})
    append_commands(driver.state_dir, [first])
    driver.settle()
    assert driver.result("old-1")["result"] == "applied"
    # Push it out of the recent results with 250 other commands, pruning the file as we go.
    for i in range(250):
        append_commands(driver.state_dir, [Command(id=f"n-{i}", action="slot.resume", slot="btc-5m")],
                        prune_ids=["old-1"] + [f"n-{j}" for j in range(i)])
        driver.kernel.tick_once()
    driver.settle()
    assert "old-1" not in [c["id"] for c in driver.kernel.snapshot()["commands"]]
    append_commands(driver.state_dir, [Command(id="old-2", action="slot.configure", slot="btc-5m",
                                               args={"order_notional": 456.0})])
    driver.settle()
    append_commands(driver.state_dir, [first])  # re-sent
    for _ in range(5):
        driver.kernel.tick_once()
    reported = [c for c in driver.kernel.snapshot()["commands"] if c["id"] == "old-1"]
    assert len(reported) == 1
    assert reported[0]["result"] == "applied" and reported[0]["detail"]["reported_again"] is True
    assert driver.slot("btc-5m")["config"]["order_notional"] == 456.0, "old-1 was applied again"
    assert [c["id"] for c in driver.kernel.ledger.recent_commands(1000)].count("old-1") == 1
