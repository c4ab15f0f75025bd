"""Clocks: wall time, simulated time at N x speed, and a manual clock for tests.

Every clock answers ``now_ms()`` (epoch milliseconds, UTC). Candle closes are computed
in clock time; the tick loop always sleeps in wall time. :class:`Clock` declares what the
kernel may ask of a clock, with defaults for the optional part.
"""
from __future__ import annotations

import threading
import time

__all__ = ["Clock", "WallClock", "SimClock", "ManualClock"]


class Clock:
    """What the kernel asks of a clock. ``speed``: clock time per wall time (status.json
    reports it; late cycles are judged in wall time)."""

    speed: float = 1.0
    # True for a clock that moves only when the kernel calls advance() (a replay's clock):
    # the kernel then checks, every tick, whether it is idle enough to move it.
    kernel_driven: bool = False

    def now_ms(self) -> int:
        raise NotImplementedError

    def advance(self, next_close_ms: int | None) -> int:
        """Move a kernel-driven clock toward ``next_close_ms`` (the earliest close a slot
        waits for). A clock that runs on its own ignores it. Returns the time."""
        return self.now_ms()


class WallClock(Clock):
    speed = 1.0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class SimClock(Clock):
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


class ManualClock(Clock):
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
