"""Reloads: a new version is loaded beside the old one, checked, and swapped in, on a
thread of its own so that neither the tick nor the cycles wait for it.

Also the first load of each strategy at startup, and what follows a reload: the result
recorded for status.json, and a fault that came from the old code cleared.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

from .changes import Changes
from .clock import Clock
from .errors import ReloadFailed
from .protocol import utcnow_iso
from .slot_runtime import SlotRuntime
from .versions import SmokeSample, StrategyLoader, StrategyRegistry, StrategyVersion, check_version

__all__ = ["Reloader"]

log = logging.getLogger("kernel")


class Reloader:
    def __init__(self, *, loader: StrategyLoader, registry: StrategyRegistry, feed: Any, clock: Clock,
                 slots: dict[str, SlotRuntime], changes: Changes, reload_budget_ms: int, smoke_slots: int,
                 halted: Callable[[], bool] = lambda: False,
                 entries_allowed: Callable[[SlotRuntime], bool] = lambda slot: True) -> None:
        self._loader = loader
        self._registry = registry
        self._feed = feed
        self._clock = clock
        self._slots = slots
        self._changes = changes
        self._budget_s = reload_budget_ms / 1000.0
        self._smoke_slots = smoke_slots
        # The halt flag the tick thread sets first (OrderGate.halted), read before every
        # strategy call of a reload; and what a live cycle of a slot would get as entries_allowed.
        self._halted = halted
        self._entries_allowed = entries_allowed
        self.recent: deque[dict[str, Any]] = deque(maxlen=50)  # newest last, for status.json
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="reload", daemon=True)

    # ------------------------------------------------------------ the reload thread

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, fut = item
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)

    def submit(self, fn: Callable[[], Any]) -> Future:
        fut: Future = Future()
        if not self._thread.is_alive() and not self._thread.ident:
            # Not running (tests driving tick_once by hand): run inline.
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)
            return fut
        self._queue.put((fn, fut))
        return fut

    # ------------------------------------------------------------ load, check, swap

    def smoke_samples(self, name: str) -> list[SmokeSample]:
        """Every slot of ``name`` as its next cycle would see it (tick thread). Params are
        checked for every slot; the smoke evaluation runs on the first ``smoke_slots``."""
        samples = []
        for slot in self._slots.values():
            if slot.config.strategy != name:
                continue
            samples.append(SmokeSample(
                slot=slot.id, symbol=slot.config.symbol, timeframe=slot.config.timeframe,
                params=dict(slot.config.params), position=slot.position_qty,
                entry_price=slot.entry_price, state=dict(slot.strategy_state),
                state_schema=slot.state_schema, entries_allowed=self._entries_allowed(slot),
            ))
        return samples

    def halted_check(self, before: str) -> None:
        """ReloadFailed("halted") once a halt is observed: nothing of a reload runs during one."""
        if self._halted():
            raise ReloadFailed("halted", f"halted: a halt was observed before {before}; release the halt "
                                         "first, then reload")

    def load_checked(self, name: str, samples: list[SmokeSample] | None = None, *,
                     check: bool = True) -> StrategyVersion:
        if check:
            self.halted_check("the import")
        version = self._loader.load(name, self._registry.next_number(name))
        samples = samples if samples is not None else self.smoke_samples(name)
        try:
            if check:
                # Contexts built as a live cycle builds them, for the latest close: the full
                # warm-up, now_ms at the close, the slot's params, state and position.
                check_version(version, samples, self._budget_s, feed=self._feed, now_ms=self._clock.now_ms(),
                              smoke_slots=self._smoke_slots, should_stop=self._halted)
            else:
                # First load at boot: the interface was checked; no smoke run holds up the start,
                # but module state must still never change.
                version.set_baseline()
        except ReloadFailed:
            version.unload()
            raise
        return version

    def reload_one(self, name: str, samples: list[SmokeSample], command_id: str | None) -> dict:
        old = self._registry.get(name)
        r: dict[str, Any] = {"strategy": name, "command_id": command_id, "lock_wait_ms": None,
                             "old_sha256": old.sha256 if old else None, "new_sha256": None,
                             "error": None}
        try:
            version = self.load_checked(name, samples)
        except ReloadFailed as exc:
            # A halt that landed mid-reload abandons it; any other failed check fails it.
            r.update(result="abandoned" if exc.stage == "halted" else "failed", error=f"{exc.stage}: {exc}")
            return r
        r["new_sha256"] = version.sha256
        if old is not None and version.sha256 == old.sha256:
            version.unload()
            r.update(result="unchanged", version=old.number)
            return r
        try:
            # Checked once more under the reload lock: never swapped in during a halt.
            r["lock_wait_ms"] = self._registry.swap(version, should_stop=self._halted)
        except ReloadFailed as exc:
            version.unload()
            r.update(result="abandoned", error=f"{exc.stage}: {exc}")
            return r
        r.update(result="loaded", version=version.number)
        return r

    def load_boot_versions(self) -> None:
        """First versions at startup: a strategy that does not load leaves its slots
        faulted, not the kernel down."""
        for name in sorted({s.config.strategy for s in self._slots.values()}):
            try:
                version = self.load_checked(name, check=False)
                self._registry.swap(version)
            except ReloadFailed as exc:
                log.error("strategy %s did not load: %s", name, exc)
                self.record(strategy=name, result="failed", error=f"{exc.stage}: {exc}")
                for s in self._slots.values():
                    if s.config.strategy == name:
                        s.fault = f"strategy {name} did not load: {exc}"
                        self._changes.mark_slot(s.id)

    # ------------------------------------------------------------ after a reload (tick thread)

    def after_reload(self, r: dict) -> None:
        self.record(strategy=r["strategy"], result=r["result"], error=r.get("error"),
                    lock_wait_ms=r.get("lock_wait_ms"), old_sha256=r.get("old_sha256"),
                    new_sha256=r.get("new_sha256"), command_id=r.get("command_id"))
        if r["result"] in ("loaded", "rolled_back"):
            # A fault that came from the old version's code does not outlive it.
            for s in self._slots.values():
                if s.config.strategy == r["strategy"] and s.fault and not s.paused and not s.busy:
                    s.fault = None
                    self._changes.mark_slot(s.id)

    def record(self, *, strategy: str, result: str, error: str | None, lock_wait_ms: float | None = None,
               old_sha256: str | None = None, new_sha256: str | None = None,
               command_id: str | None = None) -> None:
        entry = {"at": utcnow_iso(), "strategy": strategy, "result": result, "error": error,
                 "lock_wait_ms": lock_wait_ms, "old_sha256": old_sha256, "new_sha256": new_sha256,
                 "command_id": command_id}
        self.recent.append(entry)
        self._changes.status_urgent = True
        (log.info if result in ("loaded", "unchanged", "rolled_back") else log.error)(
            "reload %s: %s%s", strategy, result, f" ({error})" if error else "")
