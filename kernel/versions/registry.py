"""Which version of each strategy is current, swapped under the reload lock."""
from __future__ import annotations

import threading
import time
from typing import Callable

from ..errors import ReloadFailed
from .version import StrategyVersion

RELOAD_LOCK_TIMEOUT_S = 3.0


class StrategyRegistry:
    """Which version of each strategy is current, and the previous one for rollback.

    ``pin`` (every new cycle) and ``swap`` (every reload) share one lock; the swap holds
    it only for the reference change.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: dict[str, StrategyVersion] = {}
        self.previous: dict[str, StrategyVersion] = {}
        self.numbers: dict[str, int] = {}

    def next_number(self, name: str) -> int:
        return self.numbers.get(name, 0) + 1

    def pin(self, name: str) -> tuple[StrategyVersion | None, int]:
        """The version a cycle will run, and how long it waited for the lock (ns)."""
        if self.lock.acquire(blocking=False):  # uncontended: no wait to speak of
            try:
                return self.current.get(name), 0
            finally:
                self.lock.release()
        t0 = time.perf_counter_ns()
        with self.lock:
            waited = time.perf_counter_ns() - t0
            return self.current.get(name), waited

    def get(self, name: str) -> StrategyVersion | None:
        return self.current.get(name)

    def swap(self, version: StrategyVersion, timeout_s: float = RELOAD_LOCK_TIMEOUT_S,
             should_stop: Callable[[], bool] | None = None) -> float:
        """Publish ``version``; returns the lock wait in ms. Raises ReloadFailed (stage
        "lock") when the lock cannot be had in time: the reload is abandoned, not the
        cycles; (stage "halted") when ``should_stop`` says so under the lock."""
        t0 = time.perf_counter_ns()
        if not self.lock.acquire(timeout=timeout_s):
            raise ReloadFailed(
                "lock", f"reload lock not acquired within {timeout_s:.1f} s; reload abandoned"
            )
        try:
            if should_stop is not None and should_stop():
                raise ReloadFailed("halted", "halted: a halt was observed before the swap; release the halt "
                                             "first, then reload")
            waited_ms = (time.perf_counter_ns() - t0) / 1e6
            old = self.current.get(version.name)
            self.current[version.name] = version
        finally:
            self.lock.release()
        self.numbers[version.name] = max(self.numbers.get(version.name, 0), version.number)
        if old is not None:
            dropped = self.previous.get(version.name)
            self.previous[version.name] = old
            if dropped is not None and dropped is not version:
                dropped.unload()
        return waited_ms

    def rollback(self, name: str, timeout_s: float = RELOAD_LOCK_TIMEOUT_S) -> tuple[StrategyVersion, StrategyVersion, float]:
        """Swap back to the previous version; returns (now current, now previous, wait ms)."""
        prev = self.previous.get(name)
        if prev is None:
            raise ReloadFailed("rollback", f"no previous version of {name} to roll back to")
        t0 = time.perf_counter_ns()
        if not self.lock.acquire(timeout=timeout_s):
            raise ReloadFailed("lock", f"reload lock not acquired within {timeout_s:.1f} s; rollback abandoned")
        try:
            waited_ms = (time.perf_counter_ns() - t0) / 1e6
            cur = self.current[name]
            self.current[name] = prev
            self.previous[name] = cur
        finally:
            self.lock.release()
        return prev, cur, waited_ms
