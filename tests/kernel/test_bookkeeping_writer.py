"""Cycle bookkeeping written off the tick thread (kernel/bookkeeping_writer.py): what a kill -9
may lose is only what the next start re-derives, and a command's own record never lets a
queued, older slot row overwrite a newer one."""
from __future__ import annotations

import threading

from tests.kernel.kernel_driver import M5, make_driver
from tests.support.ledger_reader import sqlite_rows


def test_bookkeeping_lost_to_a_kill_is_rederived_at_the_next_start_and_never_runs_twice(tmp_path, strategies):
    d = make_driver(tmp_path, strategies)
    d.add_slot("btc-5m", "flip")
    d.advance(3 * M5)
    k = d.kernel
    ledger_path = k.ledger.path
    recorded = k.ledger.cycles("btc-5m")  # flushed first (Ledger.pending_writes)
    assert len(recorded) == 3 and k.slots["btc-5m"].cycles == 3

    # The writer stalls (as if the process died before it wrote): the next close's cycle runs,
    # its order is booked (intent before send, fills: never bookkeeping), its bookkeeping queued.
    stall = threading.Event()
    k.ledger.record_cycles_and_slots = lambda records, slots: stall.wait()
    d.advance(M5)
    lost_close = recorded[-1]["candle_ms"] + M5
    assert k.cycles.bookkeeping.backlog >= 1
    orders = sqlite_rows(ledger_path, "SELECT side, candle_ms FROM orders WHERE slot='btc-5m' ORDER BY created_ms")
    assert orders[-1]["candle_ms"] == lost_close, "the lost cycle's order is in the ledger"
    lost_side = orders[-1]["side"]

    # kill -9: nothing flushed, nothing closed cleanly (the ledger's committed transactions stay).
    # The dead kernel's other threads are stopped first, so that none uses a closed connection.
    k.status_writer.close()
    with k.ledger._lock:
        k.ledger._db.close()
    k.broker.close()
    k.state_lock.release()
    stall.set()
    k.cycles.bookkeeping.close()  # the dead kernel's threads end (its stalled write never reaches the ledger)
    k.cycles.pool.shutdown(wait_s=5.0)

    d.kernel = k2 = d._build()
    try:
        slot = k2.slots["btc-5m"]
        # Lost: the cycle row and the slot's counters of that close, and nothing else.
        assert [c["candle_ms"] for c in k2.ledger.cycles("btc-5m")] == [c["candle_ms"] for c in recorded]
        assert slot.cycles == 3 and slot.last_cycle_ms == recorded[-1]["candle_ms"]
        # Re-derived at boot: the close without a row is counted as missed while down ...
        assert k2.cycles.stats.totals["missed_while_down"] == 1 and slot.missed_cycles == 1
        # ... the position comes from the fills (the broker agrees), not from the lost rows.
        base = "BTC"
        assert slot.position_qty == k2.broker.balances().get(base, 0.0)
        assert (slot.position_qty > 0) == (lost_side == "buy")
        # Never run twice: the next close runs, the lost one does not come back.
        d.advance(M5)
        candles = [c["candle_ms"] for c in k2.ledger.cycles("btc-5m")]
        assert candles == [c["candle_ms"] for c in recorded] + [lost_close + M5]
        rows = sqlite_rows(ledger_path, "SELECT candle_ms, COUNT(*) AS n FROM orders WHERE slot='btc-5m'"
                                        " GROUP BY candle_ms HAVING n > 1")
        assert rows == [], "no candle has two orders"
        last = sqlite_rows(ledger_path, "SELECT side FROM orders WHERE slot='btc-5m' AND candle_ms=?",
                           (lost_close + M5,))
        assert [r["side"] for r in last] == ["sell" if lost_side == "buy" else "buy"]
    finally:
        d.close()


def test_a_command_record_waits_for_queued_bookkeeping_so_a_slot_row_never_goes_back(driver):
    driver.add_slot("btc-5m", "flip")
    driver.advance(2 * M5)
    k = driver.kernel
    assert k.cycles.bookkeeping.flush()  # nothing being written while the write is swapped below
    writes: list[list[dict]] = []
    original = k.ledger.record_cycles_and_slots
    gate = threading.Event()

    def slow(records, slots):
        gate.wait(10)
        writes.append(slots)
        return original(records, slots)

    k.ledger.record_cycles_and_slots = slow
    driver.clock.jump(M5)
    driver.tick_until(lambda: k.cycles.bookkeeping.backlog >= 1, timeout=20, what="a queued batch")
    threading.Timer(0.2, gate.set).start()  # the writer gets going only after the command has begun
    r = driver.command("slot.pause", "btc-5m")
    assert r["result"] == "applied"
    assert writes and writes[0][0]["id"] == "btc-5m" and writes[0][0]["paused"] is False
    row = next(s for s in k.ledger.load_slots() if s["id"] == "btc-5m")
    assert row["paused"] is True, "the command's newer row is the one the ledger keeps"
