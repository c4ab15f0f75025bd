"""Which version of each strategy is current, swapped under the reload lock."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

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
        # Canaries and shadows (kernel/canary.py, kernel/shadow.py), per strategy: a running canary's
        # version is pinned for its slots only (changed under the lock, like ``current``); a shadow
        # is never pinned. ``last_canary``: the last canary that ended, for status.json.
        self.canary: dict[str, Any] = {}
        self.shadow: dict[str, Any] = {}
        self.last_canary: dict[str, Any] = {}

    def next_number(self, name: str) -> int:
        return self.numbers.get(name, 0) + 1

    def pin(self, name: str, slot: str | None = None) -> tuple[StrategyVersion | None, int]:
        """The version a cycle of ``slot`` will run (a canary's on its slots, else the current
        one), and how long it waited for the lock (ns)."""
        if self.lock.acquire(blocking=False):  # uncontended: no wait to speak of
            try:
                return self.version_for(name, slot), 0
            finally:
                self.lock.release()
        t0 = time.perf_counter_ns()
        with self.lock:
            waited = time.perf_counter_ns() - t0
            return self.version_for(name, slot), waited

    def version_for(self, name: str, slot: str | None) -> StrategyVersion | None:
        """What a cycle of ``slot`` runs now: the canary version on a canary slot, else the current."""
        run = self.canary.get(name)
        if run is not None and slot in run.slots:
            return run.version
        return self.current.get(name)

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

    # ------------------------------------------------------------ canaries and shadows

    def _acquire(self, timeout_s: float, what: str) -> float:
        t0 = time.perf_counter_ns()
        if not self.lock.acquire(timeout=timeout_s):
            raise ReloadFailed("lock", f"reload lock not acquired within {timeout_s:.1f} s; {what} abandoned")
        return (time.perf_counter_ns() - t0) / 1e6

    def _deploy_check(self, name: str) -> None:
        if name in self.canary or name in self.shadow:
            what = "canary" if name in self.canary else "shadow"
            raise ReloadFailed("busy", f"a {what} of {name} runs: promote it or roll it back first")

    def start_deploy(self, run: Any, kind: str, timeout_s: float = RELOAD_LOCK_TIMEOUT_S,
                     should_stop: Callable[[], bool] | None = None) -> float:
        """Publish a canary (``kind`` "canary": its version runs on its slots from the next cycle)
        or a shadow, under the lock; one at a time per strategy. Returns the lock wait in ms."""
        waited_ms = self._acquire(timeout_s, kind)
        try:
            if should_stop is not None and should_stop():
                raise ReloadFailed("halted", f"halted: a halt was observed before the {kind} started; release "
                                             "the halt first, then reload")
            self._deploy_check(run.name)
            if run.name not in self.current:
                raise ReloadFailed("busy", f"strategy {run.name} has no current version")
            (self.canary if kind == "canary" else self.shadow)[run.name] = run
        finally:
            self.lock.release()
        self.numbers[run.name] = max(self.numbers.get(run.name, 0), run.version.number)
        return waited_ms

    def end_canary(self, name: str, run: Any, timeout_s: float = RELOAD_LOCK_TIMEOUT_S) -> float:
        """The canary slots go back to the current version (one reference change). Raises
        ReloadFailed("gone") when ``run`` is no longer the running canary."""
        waited_ms = self._acquire(timeout_s, "canary rollback")
        try:
            if self.canary.get(name) is not run:
                raise ReloadFailed("gone", f"no canary of {name} runs")
            del self.canary[name]
            self.last_canary[name] = run
        finally:
            self.lock.release()
        return waited_ms

    def promote_canary(self, name: str, run: Any, timeout_s: float = RELOAD_LOCK_TIMEOUT_S,
                       should_stop: Callable[[], bool] | None = None) -> tuple[StrategyVersion, float]:
        """The canary version current for every slot, the current one previous, in one
        reference change. Returns (the old current, lock wait ms)."""
        waited_ms = self._acquire(timeout_s, "promote")
        try:
            if should_stop is not None and should_stop():
                raise ReloadFailed("halted", "halted: a halt was observed before the promote; release the halt "
                                             "first, then promote")
            if self.canary.get(name) is not run:
                raise ReloadFailed("gone", f"no canary of {name} runs: nothing to promote")
            old = self.current[name]
            self.current[name] = run.version
            del self.canary[name]
            self.last_canary[name] = run
        finally:
            self.lock.release()
        dropped = self.previous.get(name)
        self.previous[name] = old
        if dropped is not None and dropped is not run.version:
            dropped.unload()
        return old, waited_ms
