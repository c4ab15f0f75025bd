"""kernel/scheduler.py driven by a ManualClock: candle-aligned closes, missed-close
accounting, reset after a pause, and slots coming and going."""
from __future__ import annotations

import pytest

from kernel.clock import ManualClock, SimClock
from kernel.scheduler import Scheduler, last_close_at_or_before, next_close_after, timeframe_ms

M5 = timeframe_ms("5m")
M15 = timeframe_ms("15m")
H1 = timeframe_ms("1h")
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a multiple of every timeframe up to 1d


def test_timeframes_and_alignment_helpers():
    assert M5 == 300_000 and M15 == 900_000 and H1 == 3_600_000
    assert next_close_after(T0, M5) == T0 + M5  # a close that is "now" has already happened
    assert next_close_after(T0 + 1, M5) == T0 + M5
    assert last_close_at_or_before(T0 + M5 - 1, M5) == T0
    assert last_close_at_or_before(T0 + M5, M5) == T0 + M5


def test_closes_are_candle_aligned_and_due_exactly_once():
    clock = ManualClock(T0 + 12_345)
    s = Scheduler()
    s.add("a-5m", "5m", clock.now_ms())
    assert s.next_close("a-5m") == T0 + M5
    assert s.due(clock.now_ms()) == []
    clock.jump(M5 - 12_345 - 1)
    assert s.due(clock.now_ms()) == [], "not due one ms before the close"
    clock.jump(1)
    due = s.due(clock.now_ms())
    assert [(d.slot_id, d.close_ms, d.missed) for d in due] == [("a-5m", T0 + M5, 0)]
    assert s.due(clock.now_ms()) == [], "a close is handed out once"
    assert s.next_close("a-5m") == T0 + 2 * M5


def test_interleaved_timeframes_over_an_hour_in_small_steps():
    clock = ManualClock(T0)
    s = Scheduler()
    for slot, tf in (("a-5m", "5m"), ("a-15m", "15m"), ("b-5m", "5m"), ("b-1h", "1h")):
        s.add(slot, tf, clock.now_ms())
    seen: dict[str, list[int]] = {}
    for _ in range(3600 // 7 + 1):
        clock.jump(7_000)  # 7 s steps: never on a boundary by construction of the step
        for d in s.due(clock.now_ms()):
            assert d.missed == 0
            seen.setdefault(d.slot_id, []).append(d.close_ms)
    assert seen["a-5m"] == [T0 + i * M5 for i in range(1, 13)]
    assert seen["b-5m"] == seen["a-5m"]
    assert seen["a-15m"] == [T0 + i * M15 for i in range(1, 5)]
    assert seen["b-1h"] == [T0 + H1]


def test_a_late_tick_reports_the_closes_it_skipped_and_runs_the_latest():
    clock = ManualClock(T0)
    s = Scheduler()
    s.add("a-5m", "5m", clock.now_ms())
    s.add("a-15m", "15m", clock.now_ms())
    clock.jump(3 * M5 + 1_000)  # the kernel slept through three 5m closes
    due = {d.slot_id: d for d in s.due(clock.now_ms())}
    assert due["a-5m"].close_ms == T0 + 3 * M5 and due["a-5m"].missed == 2
    assert due["a-15m"].close_ms == T0 + M15 and due["a-15m"].missed == 0
    assert s.next_close("a-5m") == T0 + 4 * M5
    clock.jump(M5)
    due = s.due(clock.now_ms())
    assert [(d.slot_id, d.close_ms, d.missed) for d in due] == [("a-5m", T0 + 4 * M5, 0)]


def test_reset_forgets_closes_that_passed_while_off():
    clock = ManualClock(T0)
    s = Scheduler()
    s.add("a-5m", "5m", clock.now_ms())
    clock.jump(10 * M5 + 5)
    s.reset(clock.now_ms())
    assert s.due(clock.now_ms()) == []
    assert s.next_close("a-5m") == T0 + 11 * M5
    clock.jump(M5)
    due = s.due(clock.now_ms())
    assert [(d.close_ms, d.missed) for d in due] == [(T0 + 11 * M5, 0)]


def test_remove_and_re_add_with_another_timeframe():
    clock = ManualClock(T0)
    s = Scheduler()
    s.add("a", "5m", clock.now_ms())
    s.add("b", "5m", clock.now_ms())
    assert len(s) == 2
    s.remove("a")
    assert len(s) == 1 and s.next_close("a") is None
    clock.jump(M5)
    assert [d.slot_id for d in s.due(clock.now_ms())] == ["b"]
    s.add("a", "15m", clock.now_ms())
    clock.jump(M15)
    due = {d.slot_id: d for d in s.due(clock.now_ms())}
    assert (due["a"].close_ms, due["a"].missed) == (T0 + M15, 0)  # added at T0+5m: first 15m close
    # The stale 5m entry of "a" never comes back.
    clock.jump(M5)
    assert all(d.slot_id != "a" for d in s.due(clock.now_ms()))


def test_thousands_of_slots_each_due_once_per_close():
    clock = ManualClock(T0)
    s = Scheduler()
    for i in range(3000):
        s.add(f"s{i}", "5m" if i % 2 else "15m", clock.now_ms())
    clock.jump(M15)
    due = s.due(clock.now_ms())
    assert len(due) == 3000
    assert len({d.slot_id for d in due}) == 3000
    assert all(d.close_ms == T0 + M15 for d in due)
    assert sum(d.missed for d in due) == 1500 * 2  # the 5m slots slept through two closes


def test_sim_clock_runs_speed_times_faster_and_never_backwards():
    clock = SimClock(600, start_ms=T0)
    a = clock.now_ms()
    b = clock.now_ms()
    assert T0 <= a <= b
    with pytest.raises(ValueError):
        SimClock(0)
    with pytest.raises(ValueError):
        ManualClock().jump(-1)
