"""Clocks: wall time, simulated time at N x speed, and a manual clock for tests.

Every clock answers ``now_ms()`` (epoch milliseconds, UTC). Candle closes are computed
in clock time; the tick loop always sleeps in wall time.
"""
from __future__ import annotations

import threading
import time


class WallClock:
    speed = 1.0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class SimClock:
    """Clock time runs ``speed`` times faster than wall time from ``start_ms``.

    ``start_ms`` lets a restarted kernel continue from where its clock was, so candle
    closes never repeat or run backwards across restarts.
    """

    def __init__(self, speed: float, start_ms: int | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = float(speed)
        self._start_ms = int(start_ms if start_ms is not None else time.time_ns() // 1_000_000)
        self._mono0 = time.monotonic_ns()

    def now_ms(self) -> int:
        elapsed_ns = time.monotonic_ns() - self._mono0
        return self._start_ms + int(elapsed_ns * self.speed / 1_000_000)


class ManualClock:
    """A clock that moves only when told (trio's MockClock.jump is the model)."""

    speed = 1.0

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = int(start_ms)
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def jump(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += int(ms)
