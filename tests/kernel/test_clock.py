"""The clock interface (kernel/clock.py): every clock is a Clock, and only a replay's clock
is driven by the kernel."""
from __future__ import annotations

import math

from kernel.clock import Clock, ManualClock, SimClock, WallClock
from kernel.replay_clock import ReplayClock


def test_only_the_replay_clock_waits_for_the_kernel():
    clocks = [WallClock(), SimClock(60.0, start_ms=0), ManualClock(1_000), ReplayClock(1_000, speed=math.inf)]
    assert all(isinstance(c, Clock) for c in clocks)
    assert [c.kernel_driven for c in clocks] == [False, False, False, True]


def test_a_clock_that_runs_on_its_own_ignores_advance():
    clock = ManualClock(1_000)
    assert clock.advance(5_000) == 1_000 and clock.now_ms() == 1_000
    clock.jump(500)
    assert clock.advance(None) == 1_500


def test_a_replay_clock_moves_to_the_next_close_and_no_further():
    ended = []
    clock = ReplayClock(1_000, speed=math.inf, end_ms=10_000, on_end=lambda: ended.append(True))
    assert clock.advance(4_000) == 4_000 == clock.now_ms()
    assert clock.advance(20_000) == 10_000 and ended == [True]
