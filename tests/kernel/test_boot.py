"""Startup (kernel/boot.py): the closes that passed while the kernel was down."""
from __future__ import annotations

from tests.kernel.kernel_driver import M5


def test_closes_that_pass_while_the_kernel_is_down_are_counted_as_missed(driver):
    """A restart's blind window is not hidden: every close with no cycle is a missed cycle."""
    driver.add_slot("btc-5m", "flip")
    driver.advance(3 * M5)
    assert driver.slot("btc-5m")["missed_cycles"] == 0
    ran = len(driver.cycles("btc-5m"))
    assert ran >= 3
    driver.kernel.shutdown()
    driver.clock.jump(4 * M5)  # the process is down for four candle closes
    driver.kernel = driver._build()
    assert driver.slot("btc-5m")["missed_cycles"] == 4
    assert driver.kernel.snapshot()["cycles"]["missed_while_down"] == 4
    driver.advance(M5)
    assert len(driver.cycles("btc-5m")) == ran + 1  # trading goes on from the next close


def test_a_stopped_kernel_restarted_counts_nothing_missed(driver):
    driver.add_slot("btc-5m", "flip")
    driver.advance(2 * M5)
    assert driver.command("stop")["result"] == "applied"
    driver.kernel.shutdown()
    driver.clock.jump(4 * M5)
    driver.kernel = driver._build()
    assert driver.slot("btc-5m")["missed_cycles"] == 0
