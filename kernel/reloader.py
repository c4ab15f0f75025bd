"""Reloads: a new version is loaded beside the old one, checked, and swapped in, on a
thread of its own so that neither the tick nor the cycles wait for it.

Also the first load of each strategy at startup, and what follows a reload: the result
recorded for status.json, and a fault that came from the old code cleared.
"""
from __future__ import annotations

import contextvars
import functools
import logging
import queue
import threading
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

from .changes import Changes
from .clock import Clock
from . import metrics
from .errors import ReloadFailed
from .protocol import utcnow_iso
from .release_store import ReleaseStore
from .slot_runtime import SlotRuntime
from .versions import SmokeSample, StrategyLoader, StrategyRegistry, StrategyVersion, check_version

__all__ = ["Reloader", "reload_message"]

log = logging.getLogger("kernel")


def reload_message(r: dict) -> str:
    """What the operator reads of one strategy's reload: old → new version and sha256 prefix
    (the full sha256s are in the result's detail), or why it did not happen."""
    def ref(number: Any, sha: Any) -> str:
        return f"v{number if number is not None else '?'} ({str(sha)[:12]})" if sha else "nothing"

    name = r.get("strategy")
    if r.get("result") in ("failed", "abandoned"):
        return f"{name}: {r.get('result')}: {r.get('error')}"
    new = ref(r.get("version"), r.get("new_sha256"))
    if r.get("result") == "unchanged":
        return f"{name}: unchanged, still {new}"
    return f"{name}: {ref(r.get('old_version'), r.get('old_sha256'))} → {new}"


class Reloader:
    def __init__(self, *, loader: StrategyLoader, registry: StrategyRegistry, feed: Any, clock: Clock,
                 slots: dict[str, SlotRuntime], changes: Changes, reload_budget_ms: int, smoke_slots: int,
                 halted: Callable[[], bool] = lambda: False,
                 entries_allowed: Callable[[SlotRuntime], bool] = lambda slot: True,
                 store: ReleaseStore | None = None, crash: Callable[[str], None] | None = None) -> None:
        self._loader = loader
        # The release store (kernel/release_store.py): every version is stored there before
        # it goes live, numbered by its sha256; a restart resumes from it. None: not kept.
        self.store = store
        self._crash = crash
        self._registry = registry
        self._feed = feed
        self.feed = feed  # a shadow's candles beyond the live cycle's (kernel/shadow.py)
        self._clock = clock
        self._slots = slots
        self._changes = changes
        self._budget_s = reload_budget_ms / 1000.0
        self._smoke_slots = smoke_slots
        # The halt flag the tick thread sets first (OrderGate.halted), read before every
        # strategy call of a reload; and what a live cycle of a slot would get as entries_allowed.
        self._halted = halted
        self.halted = halted  # the same flag, for canaries and shadows (kernel/deploys.py)
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
        # The submitter's context goes with the work (as asyncio.to_thread does): the reload
        # thread's lines name the command that asked for it (kernel/log_setup.py, command_logging).
        self._queue.put((functools.partial(contextvars.copy_context().run, fn), fut))
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
                     check: bool = True, stored: str | None = None) -> StrategyVersion:
        """Load ``name`` from the working tree, or ``stored`` (a sha256) from the release store
        (its entry verified first, nothing of a corrupt one runs), and check it."""
        if check:
            self.halted_check("the import")
        folder = None
        if stored is not None:
            if self.store is None:
                raise ReloadFailed("store", "no release store")
            self.store.verify(stored)
            folder = self.store.folder(stored)
        version = self._loader.load(name, 0, folder=folder)
        if stored is not None and version.sha256 != stored:
            version.unload()
            raise ReloadFailed("store", f"stored version {stored[:12]} compiled to {version.sha256[:12]}: refused")
        # A number names one code forever: the one its sha256 has, or the next (given when stored).
        version.number = (self.store.number_for(name, version.sha256) if self.store is not None
                          else self._registry.next_number(name))
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

    def publish(self, version: StrategyVersion, *, by: str | None, command_id: str | None) -> None:
        """Into the release store before it goes live (ReloadFailed("store") if it cannot be)."""
        if self.store is not None:
            self.store.put(version, by=by, command_id=command_id, crash=self._crash)

    def mark_current(self, version: StrategyVersion, previous: StrategyVersion | None) -> None:
        """What a restart resumes: recorded once ``version`` is swapped in."""
        if self.store is not None:
            self.store.mark_current(version.name, version.sha256, previous.sha256 if previous else None)

    def reload_one(self, name: str, samples: list[SmokeSample], command_id: str | None, *,
                   by: str | None = None, stored: str | None = None) -> dict:
        old = self._registry.get(name)
        r: dict[str, Any] = {"strategy": name, "command_id": command_id, "lock_wait_ms": None,
                             "old_sha256": old.sha256 if old else None, "new_sha256": None,
                             "error": None}
        try:
            version = self.load_checked(name, samples, stored=stored)
        except ReloadFailed as exc:
            # A halt that landed mid-reload abandons it; any other failed check fails it.
            r.update(result="abandoned" if exc.stage == "halted" else "failed", error=f"{exc.stage}: {exc}")
            return r
        r["new_sha256"] = version.sha256
        r["old_version"] = old.number if old else None
        if old is not None and version.sha256 == old.sha256:
            version.unload()
            r.update(result="unchanged", version=old.number, message=reload_message(r))
            return r
        if name in self._registry.canary or name in self._registry.shadow:  # started while this one waited
            version.unload()
            r.update(result="abandoned", error=f"busy: a canary or shadow of {name} runs: promote it or roll it "
                                               "back first")
            return r
        # On the reload thread, named by the command that asked (submit): a slow check is visible.
        log.info("reload %s: v%s (%s) passed its checks; storing it and swapping it in", name, version.number,
                 version.sha256[:12])
        try:
            self.publish(version, by=by, command_id=command_id)  # stored before it goes live
        except ReloadFailed as exc:
            version.unload()
            r.update(result="failed", error=f"{exc.stage}: {exc}")
            return r
        try:
            # Checked once more under the reload lock: never swapped in during a halt.
            r["lock_wait_ms"] = self._registry.swap(version, should_stop=self._halted)
        except ReloadFailed as exc:
            version.unload()
            r.update(result="abandoned", error=f"{exc.stage}: {exc}")
            return r
        self.mark_current(version, old)
        r.update(result="rolled_back" if stored is not None else "loaded", version=version.number)
        r["message"] = reload_message(r)
        return r

    def load_boot_versions(self) -> None:
        """First versions at startup: a strategy that does not load leaves its slots
        faulted, not the kernel down."""
        resume = self.store.current() if self.store is not None else {}
        for name in sorted({s.config.strategy for s in self._slots.values()}):
            try:
                # What ran before the restart, compiled from the store, never silently from the
                # working tree; a strategy never published loads from the working tree, stored first.
                stored = (resume.get(name) or {}).get("sha256")
                version = self.load_checked(name, check=False, stored=stored)
                if stored is None:
                    try:
                        self.publish(version, by="kernel (first load at startup)", command_id=None)
                    except ReloadFailed:
                        version.unload()
                        raise
                self._registry.swap(version)
                if stored is None:
                    self.mark_current(version, None)
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
        metrics.reload_recorded(result=result, lock_wait_ms=lock_wait_ms)
        self._changes.status_urgent = True
        (log.info if result in ("loaded", "unchanged", "rolled_back", "canary_started", "shadow_started", "promoted",
                                  "canary_rolled_back", "shadow_discarded") else log.error)(
            "reload %s: %s%s", strategy, result, f" ({error})" if error else "")
