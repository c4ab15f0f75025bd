"""Cycles: which are due, the cycle itself (on a worker), deadlines, and folding each
outcome into its slot on the tick thread.

A cycle pins the strategy version it starts with, evaluates it on the feed's candles,
and hands its decision to the order path; the tick thread alone changes slot state, from
the outcomes the workers queue. A cycle past its deadline is abandoned: its worker is
replaced, its orders are refused, its slot paused.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import ValidationError

from .brokers import Broker
from .bookkeeping_writer import BookkeepingWriter
from .canary import CanaryRun, bad_cycle, clear_canary_faults
from .changes import Changes
from .clock import Clock
from .cycle_stats import CycleStats
from .errors import ReloadFailed, StrategyFault, format_validation_error
from .execution import Execution
from .ledger import CycleRecord, Ledger
from .log_setup import command_logging, current_command_id
from . import metrics
from .protocol import SlotConfig, ms_to_iso
from .scheduler import Scheduler
from .slot_runtime import EPS, SlotRuntime
from .strategy_api import ENTER, EXIT
from .versions import StrategyRegistry
from .versions.checks import ContextFailed, Halted, SmokeSample, build_context, run_evaluate
from .workers import Job, WorkerPool

__all__ = ["CycleOutcome", "Cycles", "HALTED", "SKIPPED"]

HALTED = "halted"  # the result of a cycle a halt stopped before any strategy call of it
SKIPPED = "skipped"  # the result of a cycle whose candle the feed does not have: evaluate not called

log = logging.getLogger("kernel")


@dataclass
class CycleOutcome:
    slot: str
    close_ms: int
    strategy: str
    version: int | None = None
    sha256: str | None = None
    started_ms: int | None = None
    lag_ms: int | None = None
    lock_wait_ns: int = 0
    duration_us: int = 0
    result: str = "hold"
    reason: str | None = None
    state: dict[str, Any] | None = None
    state_schema: int | None = None
    fault: str | None = None
    order: dict[str, Any] | None = None
    data_ended: bool = False  # skipped because the replay data of its symbol/timeframe ended
    job: Job | None = None  # the job that ran it: whether it was abandoned is that job's, not the slot's


class Cycles:
    def __init__(self, *, slots: dict[str, SlotRuntime], scheduler: Scheduler, clock: Clock, feed: Any,
                 broker: Broker, registry: StrategyRegistry, execution: Execution, ledger: Ledger,
                 changes: Changes, workers: int, cycle_deadline_ms: int, late_after_ms: int,
                 halted: Callable[[], bool] = lambda: False,
                 record: Callable[..., None] | None = None) -> None:
        self._slots = slots
        # Where a canary's automatic rollback is recorded (Reloader.record: status.json's reloads).
        self._record = record
        self._scheduler = scheduler
        self._clock = clock
        self._feed = feed
        self._broker = broker
        self._registry = registry
        self._execution = execution
        self._ledger = ledger
        self._changes = changes
        self._deadline_ms = cycle_deadline_ms
        self._flatten_overdue: set[int] = set()  # ids of flatten jobs past a cycle's deadline, said once
        self._late_after_ms = late_after_ms
        # The halt flag the tick thread sets first (OrderGate.halted): a plain read, checked on
        # the worker right before each strategy call.
        self._halted = halted
        self.stats = CycleStats()
        self.bookkeeping = BookkeepingWriter(ledger)  # persist() hands its batches to it
        self.outcomes: queue.SimpleQueue[CycleOutcome] = queue.SimpleQueue()
        self.pool = WorkerPool(workers, self._on_job_done)

    # ------------------------------------------------------------ dispatch (tick thread)

    def dispatch_due(self) -> None:
        now = self._clock.now_ms()
        totals = self.stats.totals
        for due in self._scheduler.due(now):
            slot = self._slots.get(due.slot_id)
            if slot is None or not slot.config.enabled:
                continue
            if due.missed:
                slot.missed_cycles += due.missed
                totals["missed"] += due.missed
                metrics.cycles_missed(timeframe=slot.config.timeframe, count=due.missed)
                self._changes.mark_slot(slot.id)
            if slot.busy:
                slot.missed_cycles += 1  # never two cycles of one slot at once
                totals["missed"] += 1
                metrics.cycles_missed(timeframe=slot.config.timeframe, count=1)
                self._changes.mark_slot(slot.id)
                continue
            if slot.pending_config is not None:
                slot.apply_pending_config(scheduler=self._scheduler, clock=self._clock, changes=self._changes)
            cfg = slot.config
            slot.inflight = self.pool.submit(
                self.run_cycle, cfg, due.close_ms, dict(slot.strategy_state), slot.state_schema,
                key=slot.id, meta=("cycle", due.close_ms),
            )

    def submit_flatten(self, slot: SlotRuntime, run: Callable[[Job], dict], fut: Future,
                       command_id: str | None = None) -> None:
        """Run a flatten as the slot's next job; its result resolves ``fut``. ``command_id``
        defaults to the command being applied on this thread (its failure is logged with it)."""
        if command_id is None:
            command_id = current_command_id()
        # Never two jobs of one slot at once: wait for an in-flight cycle.
        if slot.busy:
            threading.Timer(0.01, self.submit_flatten, args=(slot, run, fut, command_id)).start()
            return
        slot.inflight = self.pool.submit(run, key=slot.id, meta=("flatten", fut, command_id))

    def _on_job_done(self, job: Job) -> None:
        kind, info = job.meta[0], job.meta[1]
        if kind == "flatten":
            fut: Future = info
            self._flatten_overdue.discard(id(job))
            if job.error is not None:
                with command_logging(job.meta[2]):  # a worker's line: it names the flatten's command
                    log.error("slot %s: flatten failed", job.key, exc_info=job.error)
                fut.set_result({"error": f"{type(job.error).__name__}: {job.error}"})
            else:
                fut.set_result(job.result)
            return
        if job.error is not None:
            out = CycleOutcome(slot=job.key, close_ms=info, strategy="?", result="fault",
                               fault=f"internal error: {type(job.error).__name__}: {job.error}")
            log.error("cycle %s@%s crashed", job.key, info, exc_info=job.error)
        else:
            out = job.result
        out.job = job
        self.outcomes.put(out)

    # ------------------------------------------------------------ the cycle (a worker)

    def run_cycle(self, job: Job, cfg: SlotConfig, close_ms: int, state: dict,
                  state_schema: int | None) -> CycleOutcome:
        started_ms = self._clock.now_ms()
        t0 = time.perf_counter_ns()
        out = CycleOutcome(slot=cfg.id, close_ms=close_ms, strategy=cfg.strategy, started_ms=started_ms,
                           lag_ms=started_ms - close_ms)
        halted = self._halted
        if halted():  # queued before the halt, started after it: no strategy code runs
            return self._skipped(out, "halted: the halt was observed before this cycle started")
        # The version this whole cycle runs: a canary's on a canary slot, else the current one.
        version, waited = self._registry.pin(cfg.strategy, cfg.id)
        out.lock_wait_ns = waited
        if version is None:
            out.result, out.reason = "no_version", f"strategy {cfg.strategy} has no loaded version"
            return out
        out.version, out.sha256 = version.number, version.sha256
        slot = self._slots.get(cfg.id)
        if slot is not None:
            slot.pinned_sha256 = version.sha256
        try:
            if slot is not None:  # the slot's resting orders: every fill up to now booked before it decides
                self._execution.resting.poll(cfg.id)
            position = slot.position_qty if slot else 0.0
            if 0 < position < self._broker.dust_qty(cfg.symbol):
                position = 0.0  # less than the exchange's smallest order: unsellable dust, the slot is flat
            # The one way a cycle's Context is built; the smoke check builds its own the same way.
            sample = SmokeSample(
                slot=cfg.id, symbol=cfg.symbol, timeframe=cfg.timeframe, params=cfg.params, position=position,
                entry_price=slot.entry_price if slot else None, state=state, state_schema=state_schema,
                entries_allowed=self._execution.entries_allowed(slot),
            )
            ctx = build_context(version, sample, close_ms=close_ms, feed=self._feed, should_stop=halted)
            candles = ctx.candles
            missing = self._missing_candle(cfg, ctx)
            if missing is not None:  # never evaluate a stale window, nor price an order at its close
                out.result, out.reason, out.data_ended = SKIPPED, missing[0], missing[1]
                out.duration_us = (time.perf_counter_ns() - t0) // 1000
                return out
            decision = run_evaluate(version, ctx, halted)
            if version.state_changed():
                version.tainted = "evaluate changed module-level state"
                raise StrategyFault(
                    "evaluate changed module-level state: strategies must be stateless"
                )
            if decision.state is not None:
                json.dumps(decision.state)  # must be storable
        except Halted as exc:
            return self._skipped(out, str(exc))
        except ContextFailed as exc:
            if exc.stage == "params":
                cause = exc.__cause__
                detail = format_validation_error(cause) if isinstance(cause, ValidationError) else str(exc)
                out.result = "fault"
                out.fault = out.reason = f"params invalid for {cfg.strategy} v{version.number}: {detail}"
            elif exc.stage == "migrate":
                out.result, out.fault, out.reason = "fault", str(exc), str(exc)
            else:  # the feed: this cycle's error, not the strategy's
                out.result, out.reason = "error", str(exc)
            return out
        except StrategyFault as exc:
            out.result, out.fault, out.reason = "fault", str(exc), str(exc)
            return out
        except (TypeError, ValueError) as exc:
            out.result, out.fault = "fault", f"state not storable: {exc}"
            out.reason = out.fault
            return out
        except Exception as exc:  # noqa: BLE001 - a feed error is this cycle's, not the kernel's
            out.result, out.reason = "error", f"{type(exc).__name__}: {exc}"
            return out
        out.state = decision.state
        out.state_schema = version.state_schema
        out.reason = decision.reason[:200] if decision.reason else None
        out.result = decision.action
        if candles and slot is not None:
            price = candles[-1].close
            slot.last_price = price
            key = str(close_ms)
            limit = self._execution.limit_of(decision, timeframe=cfg.timeframe, close_ms=close_ms, close=price)
            at = limit["limit_price"] if limit else price
            if decision.action == ENTER and position <= EPS:
                qty = cfg.order_notional / at
                out.order = self._execution.send(slot=slot, cfg=cfg, intent="entry", side="buy", qty=qty,
                                                 price=at, candle_ms=close_ms, key=key, job=job, limit=limit)
            elif decision.action == EXIT and position > EPS:
                out.order = self._execution.send(slot=slot, cfg=cfg, intent="exit", side="sell", qty=position,
                                                 price=at, candle_ms=close_ms, key=key, job=job, limit=limit)
            elif decision.action == EXIT:  # flat, an entry resting: the exit withdraws it
                self._execution.resting.cancel_slot(cfg.id)
        out.duration_us = (time.perf_counter_ns() - t0) // 1000
        shadow = self._registry.shadow.get(cfg.strategy)
        if shadow is not None and shadow.version is not version:
            # After the live order is placed: the shadow gets this same context, and is not waited for.
            shadow.offer(sample, close_ms=close_ms, candles=candles, live=decision.action, live_reason=decision.reason)
        return out

    def _missing_candle(self, cfg: SlotConfig, ctx: Any) -> tuple[str, bool] | None:
        """Why the cycle's own candle (the one that closed at ``ctx.now_ms``) is not the newest
        of ``ctx.candles`` — a feed gap, or the end of replay data (then True) — or None."""
        candles = ctx.candles
        if candles and candles[-1].ts == ctx.candle_ms:
            return None
        tf_ms = ctx.now_ms - ctx.candle_ms
        data_end = getattr(self._feed, "data_end_ms", None)  # a replay feed knows where its data ends
        end = data_end(cfg.symbol, cfg.timeframe) if data_end is not None else None
        if end is not None and ctx.now_ms > end:
            return (f"replay data for {cfg.symbol} {cfg.timeframe} ended at {ms_to_iso(end)}: "
                    "no more cycles for this slot"), True
        newest = f"closes at {ms_to_iso(candles[-1].ts + tf_ms)}" if candles else "is none"
        return (f"no candle closing at {ms_to_iso(ctx.now_ms)} ({cfg.symbol} {cfg.timeframe}): "
                f"the feed's newest {newest}; evaluate not called"), False

    @staticmethod
    def _skipped(out: CycleOutcome, reason: str) -> CycleOutcome:
        """A cycle that a halt stopped before its next strategy call: no state, no order."""
        out.result, out.reason = HALTED, reason
        return out

    # ------------------------------------------------------------ deadlines and outcomes (tick thread)

    def check_deadlines(self) -> None:
        limit_s = self._deadline_ms / 1000.0
        now = time.monotonic()
        for slot in self._slots.values():
            job = slot.inflight
            if job is None or job.done.is_set() or job.abandoned or job.started_wall is None:
                continue
            if now - job.started_wall > limit_s:
                if job.meta[0] == "flatten":
                    # A flatten is an operator's order in progress at the broker: abandoning it
                    # would free the slot for a cycle whose order could cross it. It stays in
                    # flight (the slot's cycles are missed, and counted) and is said once.
                    if id(job) not in self._flatten_overdue:
                        self._flatten_overdue.add(id(job))
                        with command_logging(job.meta[2]):
                            log.warning("slot %s: flatten still running after %d ms (the deadline of a cycle); "
                                        "its cycles wait for it", slot.id, self._deadline_ms)
                    continue
                self.pool.abandon(job)
                slot.fault = (f"cycle for candle {ms_to_iso(job.meta[1])} exceeded its deadline of "
                              f"{self._deadline_ms} ms and was abandoned")
                run = self._registry.canary.get(slot.config.strategy)
                if job.meta[0] == "cycle" and run is not None and slot.id in run.slots \
                        and slot.pinned_sha256 == run.version.sha256:
                    run.faulted[slot.id] = slot.fault
                    if run.observe(slot.id, job.meta[1], "missed its deadline"):
                        self.end_canary(run)
                slot.errors += 1
                self.stats.totals["abandoned"] += 1
                self._changes.mark_slot(slot.id)
                self._changes.status_urgent = True
                log.error("slot %s: %s", slot.id, slot.fault)

    def drain_outcomes(self) -> None:
        while True:
            try:
                out = self.outcomes.get_nowait()
            except queue.Empty:
                return
            slot = self._slots.get(out.slot)
            if slot is not None:
                self._fold(slot, out)

    def _fold(self, slot: SlotRuntime, out: CycleOutcome) -> None:
        """One finished cycle into its slot's state and counters, and a cycle record."""
        totals = self.stats.totals
        changes = self._changes
        # By now the slot may run another job (a flatten starts as soon as a stuck cycle
        # returns): judge this outcome by its own job.
        job = out.job if out.job is not None else slot.inflight
        abandoned = bool(job is not None and job.abandoned and job.meta[1] == out.close_ms)
        if slot.inflight is job and job is not None and job.done.is_set():
            slot.inflight = None
        if slot.pending_config is not None:
            slot.apply_pending_config(scheduler=self._scheduler, clock=self._clock, changes=changes)
        if out.data_ended:
            if slot.fault == out.reason:
                return  # recorded once already: the slot stays stopped, its later closes are not recorded
            slot.fault = out.reason  # the slot shows it stopped (paused), not a strategy fault
            changes.status_urgent = True
            log.warning("slot %s stopped: %s", slot.id, out.reason)
        result = "abandoned" if abandoned else out.result
        if out.order and out.order.get("status") == "refused":
            result = f"{result}:refused:{out.order.get('reason')}"
            totals["refused"] += 1
        elif out.order:
            totals["orders"] += 1
        slot.cycles += 1
        slot.last_cycle_ms = out.close_ms
        if out.result == HALTED:
            totals["halted"] += 1  # recorded, but no strategy code of it ran
        elif out.result == SKIPPED:
            totals["skipped"] += 1  # recorded, but evaluate was not called: no candle
        else:
            totals["ran"] += 1
        if out.version is not None and out.result not in (HALTED, SKIPPED):
            slot.last_cycle_version, slot.last_cycle_sha256 = out.version, out.sha256
        if out.lag_ms is not None:
            self.stats.lags.append(out.lag_ms)
            wall_lag = out.lag_ms / max(self._clock.speed, 1e-9)
            if wall_lag > self._late_after_ms:
                slot.late_cycles += 1
                totals["late"] += 1
        self.stats.lock_waits_ns.append(out.lock_wait_ns)
        metrics.cycle_folded(timeframe=slot.config.timeframe, result=result, lag_ms=out.lag_ms,
                             speed=self._clock.speed, duration_us=out.duration_us, lock_wait_ns=out.lock_wait_ns)
        if out.fault and not abandoned:
            if slot.fault is None:
                log.error("slot %s paused: %s", slot.id, out.fault)
            slot.fault = out.fault
            slot.errors += 1
            totals["faults"] += 1
            changes.status_urgent = True
        elif out.result == "error":
            slot.errors += 1
        if out.state is not None and not abandoned:
            slot.strategy_state = out.state
            slot.state_schema = out.state_schema
        elif out.state_schema is not None and slot.state_schema is None:
            slot.state_schema = out.state_schema
        if out.order:
            slot.last_order = out.order
            metrics.order_decided(intent=out.order.get("intent"), side=out.order.get("side"),
                                  status=out.order.get("status"))
        run = self._registry.canary.get(out.strategy) or self._registry.last_canary.get(out.strategy)
        if run is not None and out.slot in run.slots and out.sha256 == run.version.sha256 \
                and out.result not in (HALTED, SKIPPED):
            if run.active:
                self._canary_outcome(run, slot, out, abandoned)
            elif run.state != "promoted":  # a cycle of a canary that ended since: its fault goes with it
                if out.fault and slot.fault == out.fault:
                    run.faulted[slot.id] = out.fault
                clear_canary_faults(run, self._slots, changes)
        if out.order and out.order.get("status") in ("filled", "open", "rejected", "unknown"):
            changes.status_urgent = True
        changes.mark_slot(slot.id)
        changes.cycle_records.append(CycleRecord(
            slot=out.slot, candle_ms=out.close_ms, strategy=out.strategy, version=out.version,
            sha256=out.sha256, started_ms=out.started_ms, lag_ms=out.lag_ms,
            lock_wait_us=out.lock_wait_ns // 1000, duration_us=out.duration_us, result=result,
            reason=(out.fault or out.reason),
        ))

    # ------------------------------------------------------------ canaries (tick thread)

    def _canary_outcome(self, run: CanaryRun, slot: SlotRuntime, out: CycleOutcome, abandoned: bool) -> None:
        """A cycle of a canary version on a canary slot, counted against its budget. A cycle
        abandoned at its deadline was counted then (check_deadlines): here it is not counted again."""
        if abandoned:
            return
        bad = bad_cycle(fault=out.fault, abandoned=False, order=out.order)
        if out.fault and slot.fault == out.fault:
            run.faulted[slot.id] = out.fault
        if run.observe(slot.id, out.close_ms, bad):
            self.end_canary(run)

    def end_canary(self, run: CanaryRun) -> None:
        """The budget is exceeded: the canary slots go back to the current version now."""
        try:
            self._registry.end_canary(run.name, run)
        except ReloadFailed as exc:  # the lock not had in time: tried again at the next bad cycle
            log.error("canary %s: automatic rollback not done: %s", run.name, exc)
            return
        run.end("auto_rolled_back")
        current = self._registry.get(run.name)
        with command_logging(run.command_id):  # the canary command's id, for one grep from issue to end
            log.error("canary %s v%s rolled back automatically: %s", run.name, run.version.number, run.reason)
        clear_canary_faults(run, self._slots, self._changes)
        run.version.unload()
        if self._record is not None:
            self._record(strategy=run.name, result="auto_rolled_back", error=run.reason,
                         old_sha256=run.version.sha256, new_sha256=current.sha256 if current else None,
                         command_id=run.command_id)
        self._changes.status_urgent = True

    def persist(self) -> None:
        # One transaction: a slot's counters never disagree with its recorded cycles. Written
        # off the tick thread, in order (kernel/bookkeeping_writer.py: what a kill -9 may lose).
        records, ids = self._changes.take(after_queued=False)
        if records or ids:
            self.bookkeeping.submit(records, [self._slots[i].persist_row() for i in ids if i in self._slots])

    # ------------------------------------------------------------ idle checks

    def idle(self) -> bool:
        """No cycle in flight and no outcome waiting (a finished flatten does not count)."""
        for s in self._slots.values():
            job = s.inflight
            if job is not None and not job.abandoned and not (job.meta[0] != "cycle" and job.done.is_set()):
                return False
        return self.outcomes.empty()

    def earliest_close(self) -> int | None:
        """The earliest candle close an enabled slot waits for."""
        nexts = [self._scheduler.next_close(s.id) for s in self._slots.values() if s.config.enabled]
        nexts = [n for n in nexts if n is not None]
        return min(nexts) if nexts else None

    def wait_inflight(self, timeout_s: float) -> None:
        """Let in-flight jobs finish, up to ``timeout_s`` (abandoned ones are not waited for)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(s.busy and not s.inflight.abandoned for s in self._slots.values()):
                break
            time.sleep(0.01)
