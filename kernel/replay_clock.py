"""The clock of a replay: history at any speed, the same orders every run.

A :class:`ReplayClock` moves only when the kernel tells it to
(:meth:`ReplayClock.advance`), and the kernel does so only when no cycle is in
flight. It moves toward the next candle close any slot waits for, never past it,
so that:

- every close is dispatched (a fast replay never skips a candle the way a
  :class:`~kernel.clock.SimClock` does when the kernel falls behind);
- while a cycle runs, the clock reads its candle's close time exactly, so the orders
  it sends carry the same times, and the paper broker fills them the same way,
  run after run.

``speed`` caps how fast simulated time may run against wall time (``inf``: as fast
as the cycles go). ``end_ms``: the clock stops there and ``on_end`` is called
once, when the kernel is idle at the end (the kernel stops).
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable

from .clock import Clock

__all__ = ["ReplayClock"]


class ReplayClock(Clock):
    kernel_driven = True

    def __init__(
        self,
        start_ms: int,
        *,
        speed: float = math.inf,
        end_ms: int | None = None,
        on_end: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not speed > 0:
            raise ValueError("speed must be > 0 (inf: as fast as possible)")
        self.speed = float(speed)
        self.end_ms = end_ms
        self.on_end = on_end
        self._now = int(start_ms)
        self._monotonic = monotonic
        self._last_wall = monotonic()
        self._lock = threading.Lock()
        self.ended = False

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def advance(self, next_close_ms: int | None) -> int:
        """Move toward ``next_close_ms`` (the earliest close a slot waits for), as far as
        ``speed`` allows since the last call, never past it nor past ``end_ms``.
        Call only when no cycle is in flight. Returns the new time."""
        wall = self._monotonic()
        with self._lock:
            budget = (wall - self._last_wall) * 1000.0 * self.speed
            self._last_wall = wall
            target = self._now + budget if math.isfinite(budget) else math.inf
            if next_close_ms is not None:
                target = min(target, next_close_ms)
            if self.end_ms is not None:
                target = min(target, self.end_ms)
            if math.isinf(target):
                return self._now  # nothing scheduled and no end: time has no reason to move
            self._now = max(self._now, int(target))
            at_end = self.end_ms is not None and self._now >= self.end_ms and (
                next_close_ms is None or next_close_ms > self.end_ms
            )
            fire = at_end and not self.ended
            if fire:
                self.ended = True
        if fire and self.on_end is not None:
            self.on_end()
        return self._now
