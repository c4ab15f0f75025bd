"""kernel/ledger.py on a real SQLite file: intents before sends, fills once, positions
(realized P&L, wins) from fills, cycles once per (slot, candle), commands once per id."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from kernel.ledger import CycleRecord, Ledger
from tests.support.ledger_reader import sqlite_rows


@pytest.fixture
def ledger(tmp_path: Path):
    led = Ledger(tmp_path / "ledger.sqlite3")
    yield led
    try:
        led.close()
    except sqlite3.ProgrammingError:
        pass  # closed by the test


def intent(led: Ledger, cid: str, side: str = "buy", qty: float = 1.0, slot: str = "btc-5m",
           candle_ms: int | None = 1, intent_: str | None = None) -> bool:
    return led.record_intent(client_order_id=cid, slot=slot, symbol="BTC/USDT", candle_ms=candle_ms,
                             intent=intent_ or ("entry" if side == "buy" else "exit"), side=side, qty=qty,
                             ref_price=100.0)


def fill(led: Ledger, fid: str, cid: str, qty: float, price: float, fee: float = 0.0) -> bool:
    return led.record_fill(fill_id=fid, client_order_id=cid, qty=qty, price=price, fee=fee, ts_ms=1)


def test_an_intent_is_recorded_once_per_client_order_id(ledger):
    assert intent(ledger, "c1") is True
    assert intent(ledger, "c1", qty=99.0) is False, "a retry or a replayed cycle must not send again"
    orders = ledger.orders()
    assert len(orders) == 1 and orders[0]["qty"] == 1.0 and orders[0]["status"] == "intent"
    assert [o["client_order_id"] for o in ledger.unfinished_orders()] == ["c1"]


def test_mark_order_keeps_passed_ns_and_errors(ledger):
    intent(ledger, "c1")
    ledger.mark_order("c1", "sent", passed_ns=123)
    ledger.mark_order("c1", "open", broker_order_id="P1")
    row = ledger.order("c1")
    assert (row["status"], row["passed_ns"], row["broker_order_id"]) == ("open", 123, "P1")
    assert ledger.order("nope") is None


def test_fills_are_idempotent_by_id_and_move_the_position_once(ledger):
    intent(ledger, "c1", qty=2.0)
    assert fill(ledger, "f1", "c1", 2.0, 100.0, 0.2) is True
    assert fill(ledger, "f1", "c1", 2.0, 100.0, 0.2) is False
    pos = ledger.position("btc-5m")
    assert pos.qty == pytest.approx(2.0)
    assert pos.entry_price == pytest.approx(100.0)
    assert len(ledger.fills()) == 1
    assert ledger.order("c1")["status"] == "filled"


def test_partial_fills_average_the_price_and_keep_the_order_open(ledger):
    intent(ledger, "c1", qty=4.0)
    fill(ledger, "f1", "c1", 1.0, 100.0)
    row = ledger.order("c1")
    assert row["status"] == "open" and row["filled_qty"] == pytest.approx(1.0)
    fill(ledger, "f2", "c1", 3.0, 104.0)
    row = ledger.order("c1")
    assert row["status"] == "filled"
    assert row["avg_price"] == pytest.approx((100.0 + 3 * 104.0) / 4)


def test_a_fill_for_an_unknown_order_is_refused(ledger):
    with pytest.raises(KeyError):
        fill(ledger, "f1", "ghost", 1.0, 1.0)
    assert ledger.fills() == []


def test_positions_realized_pnl_fees_and_wins_come_from_fills(ledger):
    # Round trip 1: buy 2 @100 (fee .2), buy 2 @110 (fee .22), sell 4 @120 (fee .48): a win.
    intent(ledger, "b1", qty=2.0, candle_ms=1)
    fill(ledger, "f1", "b1", 2.0, 100.0, 0.2)
    intent(ledger, "b2", qty=2.0, candle_ms=2)
    fill(ledger, "f2", "b2", 2.0, 110.0, 0.22)
    pos = ledger.position("btc-5m")
    assert pos.qty == pytest.approx(4.0) and pos.entry_price == pytest.approx(105.0)
    intent(ledger, "s1", side="sell", qty=4.0, candle_ms=3)
    fill(ledger, "f3", "s1", 4.0, 120.0, 0.48)
    pos = ledger.position("btc-5m")
    assert pos.qty == pytest.approx(0.0) and pos.entry_price is None
    assert pos.realized_pnl == pytest.approx(4 * 15.0 - 0.2 - 0.22 - 0.48)
    assert pos.fees == pytest.approx(0.9)
    assert (pos.trades, pos.wins) == (1, 1)
    # Round trip 2: a loss, partly closed in two sells.
    intent(ledger, "b3", qty=1.0, candle_ms=4)
    fill(ledger, "f4", "b3", 1.0, 100.0, 0.1)
    intent(ledger, "s2", side="sell", qty=0.5, candle_ms=5)
    fill(ledger, "f5", "s2", 0.5, 95.0, 0.05)
    assert ledger.position("btc-5m").trades == 1, "a round trip counts when it is closed"
    intent(ledger, "s3", side="sell", qty=0.5, candle_ms=6)
    fill(ledger, "f6", "s3", 0.5, 90.0, 0.04)
    pos = ledger.position("btc-5m")
    assert pos.realized_pnl == pytest.approx(59.1 - 0.1 - 2.5 - 0.05 - 5.0 - 0.04)
    assert (pos.trades, pos.wins) == (2, 1)
    # Positions always equal the sum of their fills.
    fills = ledger.fills("btc-5m")
    net = sum(f["qty"] if f["side"] == "buy" else -f["qty"] for f in fills)
    assert net == pytest.approx(pos.qty, abs=1e-12)
    assert ledger.summary()["fills"] == 6


def test_positions_are_per_slot(ledger):
    intent(ledger, "a", qty=1.0, slot="btc-5m")
    intent(ledger, "b", qty=3.0, slot="btc-15m")
    fill(ledger, "fa", "a", 1.0, 100.0)
    fill(ledger, "fb", "b", 3.0, 100.0)
    positions = ledger.positions()
    assert positions["btc-5m"].qty == pytest.approx(1.0)
    assert positions["btc-15m"].qty == pytest.approx(3.0)


def cycle(slot: str, candle: int, result: str = "hold", sha: str | None = "s1") -> CycleRecord:
    return CycleRecord(slot=slot, candle_ms=candle, strategy="x", version=1, sha256=sha, started_ms=candle,
                       lag_ms=0, lock_wait_us=0, duration_us=1, result=result, reason=result)


def test_a_cycle_is_stored_once_per_slot_and_candle(ledger):
    assert ledger.record_cycles([cycle("a", 1), cycle("a", 2), cycle("b", 1)]) == 3
    assert ledger.record_cycles([cycle("a", 1, result="enter"), cycle("a", 3)]) == 1
    rows = ledger.cycles("a")
    assert [(r["candle_ms"], r["result"]) for r in rows] == [(1, "hold"), (2, "hold"), (3, "hold")]
    assert ledger.record_cycles([]) == 0


def test_commands_are_remembered_once_with_their_kernel_state(ledger, tmp_path):
    assert ledger.record_command(id="x1", action="pause", slot=None, result="applied", error=None,
                                 at="2025-01-01T00:00:00.000Z", meta={"paused": True})
    assert not ledger.record_command(id="x1", action="pause", slot=None, result="rejected", error="dup",
                                     at="2025-01-01T00:00:01.000Z", meta={"paused": False})
    assert ledger.meta_get("paused") is True, "a duplicate's state change is not applied"
    ledger.record_command(id="x2", action="slot.pause", slot="a", result="rejected", error="unknown slot 'a'",
                          at="2025-01-01T00:00:02.000Z", detail={"k": 1})
    assert ledger.applied_command_ids() == {"x1", "x2"}
    recent = ledger.recent_commands()
    assert [(c["id"], c["result"]) for c in recent] == [("x1", "applied"), ("x2", "rejected")]
    assert recent[1]["detail"] == {"k": 1}
    ledger.close()
    again = Ledger(tmp_path / "ledger.sqlite3")
    try:
        assert again.applied_command_ids() == {"x1", "x2"}
    finally:
        again.close()


def test_flush_folds_the_wal_into_the_main_file(ledger, tmp_path):
    ledger.meta_set(halt={"engaged": True})
    for i in range(20):
        intent(ledger, f"c{i}", candle_ms=i)
        ledger.mark_order(f"c{i}", "sent", passed_ns=i)
        fill(ledger, f"f{i}", f"c{i}", 1.0, 100.0)
    ledger.flush()
    copy = tmp_path / "copy.sqlite3"
    shutil.copyfile(tmp_path / "ledger.sqlite3", copy)  # the main file alone, no -wal
    assert sqlite_rows(copy, "SELECT COUNT(*) AS n FROM orders WHERE status='filled'")[0]["n"] == 20
    assert sqlite_rows(copy, "SELECT COUNT(*) AS n FROM fills")[0]["n"] == 20


def test_slots_round_trip(ledger):
    row = dict(id="a", config={"id": "a"}, paused=True, fault="f", strategy_state={"n": 1}, state_schema=1,
               cycles=3, missed_cycles=0, late_cycles=1, errors=2, last_cycle_ms=9)
    ledger.save_slots([row])
    ledger.save_slots([{**row, "cycles": 4}])
    rows = ledger.load_slots()
    assert len(rows) == 1
    assert rows[0]["paused"] is True and rows[0]["strategy_state"] == {"n": 1} and rows[0]["cycles"] == 4


def test_a_command_commits_with_the_state_it_changed(ledger):
    row = dict(id="a", config={"id": "a"}, paused=True, fault=None, strategy_state={}, state_schema=None,
               cycles=1, missed_cycles=0, late_cycles=0, errors=0, last_cycle_ms=5)
    assert ledger.record_command(id="p1", action="slot.pause", slot="a", result="applied", error=None,
                                 at="2025-01-01T00:00:00.000Z", slots=[row], cycles=[cycle("a", 5)])
    assert ledger.load_slots()[0]["paused"] is True
    assert [r["candle_ms"] for r in ledger.cycles("a")] == [5]
    # A duplicate id records no second result, but the current state it carries is still kept.
    assert not ledger.record_command(id="p1", action="slot.pause", slot="a", result="applied", error=None,
                                     at="2025-01-01T00:00:01.000Z", slots=[{**row, "cycles": 2}],
                                     cycles=[cycle("a", 6)])
    assert ledger.load_slots()[0]["cycles"] == 2
    assert [r["candle_ms"] for r in ledger.cycles("a")] == [5, 6]
    assert [c["id"] for c in ledger.recent_commands()] == ["p1"]


def test_cycles_and_the_slot_rows_counting_them_commit_together(ledger):
    row = dict(id="a", config={"id": "a"}, paused=False, fault=None, strategy_state={}, state_schema=None,
               cycles=2, missed_cycles=0, late_cycles=0, errors=0, last_cycle_ms=2)
    assert ledger.record_cycles_and_slots([cycle("a", 1), cycle("a", 2)], [row]) == 2
    assert ledger.load_slots()[0]["cycles"] == len(ledger.cycles("a")) == 2
    assert ledger.last_candles() == {"a": 2}
    assert ledger.record_cycles_and_slots([], []) == 0
