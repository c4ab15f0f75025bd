"""The execution kernel: builds its rooms, then ticks them in order.

One tick thread: read control.json (halt first), apply commands in order, abandon
cycles past their deadline, dispatch the cycles that are due to the worker pool, fold
finished cycles into slot state, publish status.json. Cycles run on workers; reloads
on their own thread; the tick thread never runs strategy code.

The rooms, each owning its own state and handed the parts it needs (never the kernel):
``control_watch`` (control.json), ``command_stream`` and ``command_handlers`` (commands),
``halt``, ``cycles``, ``execution`` (the order path), ``reloader``, ``reconcile``,
``status_snapshot``; ``boot`` loads what the ledger holds at startup.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from . import boot, metrics
from .brokers import Broker
from .changes import Changes
from .clock import Clock
from .command_handlers import CommandContext
from .command_stream import CommandStream
from .control import CONTROL_FILE, STATUS_FILE
from .control_watch import ControlWatch
from .crash_points import crash_point
from .cycles import Cycles
from .execution import Execution
from .gate import OrderGate
from .halt import HaltController
from .ledger import LEDGER_FILE, Ledger
from .log_setup import command_logging
from .options import KernelOptions
from .reconcile import reconcile
from .release_drift import WorkingTree
from .release_store import ReleaseStore
from .reloader import Reloader
from .run_state import RunState
from .scheduler import Scheduler
from .slot_runtime import SlotRuntime
from .state_dir_lock import StateDirLock
from .status_snapshot import StatusReport
from .status_writer import StatusWriter
from .venues import build_venue
from .versions import StrategyLoader, StrategyRegistry

__all__ = ["Kernel", "KernelOptions"]

log = logging.getLogger("kernel")

CONTROL_PEEK_S = 0.002  # how often the run loop looks at control.json between ticks (one lstat)


class Kernel:
    def __init__(
        self,
        options: KernelOptions,
        *,
        clock: Clock | None = None,
        feed: Any = None,
        broker: Broker | None = None,
    ) -> None:
        self.options = options
        self.state_dir = Path(options.state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # One kernel per state dir: locked before the ledger opens, let go after it closes (shutdown).
        self.state_lock = StateDirLock.acquire_for(self.state_dir)
        try:
            self._assemble(clock=clock, feed=feed, broker=broker)
        except BaseException:
            self._abandon_build()
            raise

    def _assemble(self, *, clock: Clock | None, feed: Any, broker: Broker | None) -> None:
        options = self.options
        self.control_path = self.state_dir / CONTROL_FILE
        self.status_path = self.state_dir / STATUS_FILE
        strategies_dir = options.strategies_dir or (Path(__file__).resolve().parent.parent / "strategies")
        self.loader = StrategyLoader(strategies_dir)
        self.registry = StrategyRegistry()
        self.ledger = Ledger(self.state_dir / LEDGER_FILE)
        self.gate = OrderGate()
        self.scheduler = Scheduler()
        self._stop = threading.Event()

        # Clock, feed and broker: those passed in, else chosen from options (kernel/venues.py).
        # A replay's end stops the run loop, as stop() does.
        venue = build_venue(options, state_dir=self.state_dir,
                            resume_ms=self.ledger.meta_get("clock_ms", 0) or 0,
                            on_replay_end=self._stop.set, clock=clock, feed=feed, broker=broker)
        self.clock: Clock = venue.clock
        self.feed = venue.feed
        self.broker: Broker = venue.broker
        self.venue = venue

        self.slots: dict[str, SlotRuntime] = {}
        self.run_state = RunState()
        self.changes = Changes()
        self.control = ControlWatch(path=self.control_path, changes=self.changes)
        self.halt = HaltController(gate=self.gate, ledger=self.ledger, broker=self.broker, changes=self.changes,
                                   cancel_wait_ms=options.halt_cancel_wait_ms,
                                   settle_timeout_ms=options.cycle_deadline_ms)
        self.execution = Execution(ledger=self.ledger, broker=self.broker, gate=self.gate, clock=self.clock,
                                   feed=self.feed, run_state=self.run_state, halt=self.halt, changes=self.changes,
                                   cycle_deadline_ms=options.cycle_deadline_ms, slots=self.slots)
        self.reloader = Reloader(loader=self.loader, registry=self.registry, feed=self.feed, clock=self.clock,
                                 slots=self.slots, changes=self.changes, reload_budget_ms=options.reload_budget_ms,
                                 smoke_slots=options.smoke_slots, halted=lambda: self.gate.halted,
                                 entries_allowed=self.execution.entries_allowed,
                                 store=ReleaseStore(self.state_dir, ledger=self.ledger, strategies_dir=self.loader.folder,
                                                    keep=options.keep_versions),
                                 crash=crash_point)
        self.cycles = Cycles(slots=self.slots, scheduler=self.scheduler, clock=self.clock, feed=self.feed,
                             broker=self.broker, registry=self.registry, execution=self.execution,
                             ledger=self.ledger, changes=self.changes, workers=options.workers,
                             cycle_deadline_ms=options.cycle_deadline_ms, late_after_ms=options.late_after_ms,
                             halted=lambda: self.gate.halted, record=self.reloader.record)
        # Cycle bookkeeping is written off the tick thread: whoever writes slot rows itself or
        # reads the cycles waits for what is queued first (kernel/bookkeeping_writer.py).
        self.changes.wait_written = self.ledger.pending_writes = self.cycles.bookkeeping.flush
        self.commands = CommandStream(context=CommandContext(
            slots=self.slots, run_state=self.run_state, halt=self.halt, control=self.control,
            scheduler=self.scheduler, clock=self.clock, ledger=self.ledger, loader=self.loader,
            registry=self.registry, reloader=self.reloader, execution=self.execution, cycles=self.cycles,
            changes=self.changes,
        ))
        self.status_writer = StatusWriter(self.status_path)
        self.status = StatusReport(
            writer=self.status_writer, clock=self.clock, broker=self.broker, ledger=self.ledger,
            registry=self.registry, scheduler=self.scheduler, slots=self.slots, run_state=self.run_state,
            halt=self.halt, control=self.control, commands=self.commands, reloads=self.reloader.recent,
            cycle_stats=self.cycles.stats, changes=self.changes, tick_ms=options.tick_ms,
            status_interval_ms=options.status_interval_ms, working_tree=WorkingTree(self.loader.folder),
        )
        self.pid = self.status.pid
        self.started_at = self.status.started_at
        self._boot()
        # Last: nothing after it can fail and leave the port open. None unless --metrics-addr.
        self.metrics_exporter = metrics.MetricsExporter.start(
            options.metrics_addr, allow_remote=options.metrics_allow_remote,
            slots=self.slots, run_state=self.run_state, halt=self.halt)
        self.status.metrics_url = self.metrics_exporter.url if self.metrics_exporter else None

    def _abandon_build(self) -> None:
        """A constructor that failed lets the state dir go (its ledger closed first)."""
        try:
            if getattr(self, "ledger", None) is not None:
                self.ledger.close()
        finally:
            self.state_lock.release()

    # ================================================================== boot

    def _boot(self) -> None:
        ledger = self.ledger
        self.run_state.running = bool(ledger.meta_get("running", True))
        self.run_state.paused = bool(ledger.meta_get("paused", False))
        self.halt.restore(ledger.meta_get("halt"))
        self.commands.restore()
        boot.load_slots(slots=self.slots, ledger=ledger, demo=self.options.demo)
        self.reloader.load_boot_versions()
        self.broker.use_ledger(ledger)  # the ccxt broker looks up an order's symbol in the ledger
        self.reconcile()
        if self.halt.engaged:  # a kill during a halt may have left resting orders: cancel again
            self._start_halt_cancels()
        boot.schedule_slots(slots=self.slots, scheduler=self.scheduler, ledger=ledger, now_ms=self.clock.now_ms(),
                            trading=self.run_state.running and not self.halt.engaged,
                            stats=self.cycles.stats, changes=self.changes)

    def reconcile(self) -> dict[str, Any]:
        """Before any slot trades, the ledger is brought to what the broker says (kernel/reconcile.py)."""
        found = reconcile(ledger=self.ledger, broker=self.broker, slots=self.slots, changes=self.changes)
        self.status.reconciled = found
        return found

    @property
    def reconciled(self) -> dict[str, Any] | None:
        return self.status.reconciled

    # ================================================================== run loop

    @property
    def tick(self) -> int:
        return self.run_state.tick

    def run(self) -> None:
        """Tick until stop() is called (SIGTERM/SIGINT), then stop gracefully."""
        self.reloader.start()
        self.execution.resting.start()  # polls the resting limit orders (kernel/resting_orders.py)
        self.changes.status_urgent = True
        tick_s = self.options.tick_ms / 1000.0
        next_tick = time.monotonic()  # when the next scheduled tick is due
        try:
            while not self._stop.is_set():
                self.tick_once()
                now = time.monotonic()
                # A tick that a control.json change started early (_idle) leaves the schedule as it was.
                if now >= next_tick:
                    next_tick += tick_s
                    if next_tick < now:
                        next_tick = now  # we fell behind: do not burst to catch up
                self._idle(next_tick - now)
        finally:
            self.shutdown()

    def _idle(self, delay_s: float) -> None:
        """Wait for the next tick; a control.json written meanwhile (a halt) starts one at
        once: it is seen within CONTROL_PEEK_S of its write, not at the next tick."""
        end = time.monotonic() + delay_s
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            # A sleep, not self._stop.wait(): the SIGTERM handler sets _stop on this very thread,
            # and an Event's lock held here when the signal lands would deadlock it.
            time.sleep(min(left, CONTROL_PEEK_S))
            if self.control.changed():
                return

    def stop(self) -> None:
        """Signal-safe: ask the run loop to finish."""
        self._stop.set()

    def tick_once(self) -> None:
        self.run_state.tick += 1
        self.control.poll()
        if self.control.halt and not self.halt.engaged:  # before anything else runs
            self.engage_halt(self.control.halt_reason, source="control.json", command_id=self.control.halt_id)
        self.cycles.drain_outcomes()
        self.commands.process()
        self.cycles.check_deadlines()
        if self.run_state.running and not self.halt.engaged:
            self._advance_replay_clock()
            self.cycles.dispatch_due()
        self.broker.on_tick()  # e.g. the ccxt broker's dead man's switch: proof the tick loop lives
        self.cycles.persist()
        self.status.maybe_publish()

    def _advance_replay_clock(self) -> None:
        """A replay clock (kernel/replay_clock.py) moves only while no cycle is in flight,
        and never past the next close a slot waits for: every candle is evaluated, at
        its own close time, run after run."""
        if not self.clock.kernel_driven:
            return
        if not self.cycles.idle() or self.commands.busy:
            return
        self.clock.advance(self.cycles.earliest_close())

    # ================================================================== halt

    def engage_halt(self, reason: str | None, *, source: str, command_id: str | None = None) -> None:
        """No strategy runs, no strategy order passes the gate, resting orders are
        cancelled, the ledger is flushed; latched until an explicit release. ``command_id``:
        the halt's id in control.json, on every line about it (kernel/log_setup.py)."""
        with command_logging(command_id):
            self._engage_halt(reason, source=source, command_id=command_id)

    def _engage_halt(self, reason: str | None, *, source: str, command_id: str | None) -> None:
        # The gate first, then the halted status (built from memory, written off this thread),
        # and only then the ledger's record of it: nothing on this path waits on SQLite or a file
        # before the halt acts and is reported (tests/kernel/test_halt_tick_path.py).
        self.halt.engage(reason, source=source, tick=self.run_state.tick, command_id=command_id, record=False)
        self.status.publish_halted()  # says halted now, however long the broker takes to cancel
        self.halt.record(source)
        metrics.halt_engaged(source=source, requested_ns=self.control.written_ns if source == "control.json" else None,
                             observed_at_ns=self.halt.state.observed_at_ns)
        self._start_halt_cancels()

    def _start_halt_cancels(self) -> None:
        if self.halt.start_cancels():  # a fast broker: the halt reports its cancels at once
            self.status.publish()

    # ================================================================== status

    def snapshot(self) -> dict[str, Any]:
        return self.status.snapshot()

    # ================================================================== shutdown

    def shutdown(self) -> None:
        """Graceful stop: no new cycles, in-flight ones finish (up to their deadline),
        ledger flushed, status says stopped."""
        if self.run_state.stopped:
            return
        deadline_s = self.options.cycle_deadline_ms / 1000.0
        self.cycles.wait_inflight(deadline_s)
        self.cycles.drain_outcomes()
        self.cycles.persist()
        self.cycles.bookkeeping.close()  # everything queued is written before the ledger closes
        self.reloader.stop()
        self.cycles.pool.shutdown(wait_s=1.0)
        self.execution.pending_trades.close()  # before the ledger closes under it
        self.execution.resting.close()
        self.halt.join(deadline_s)
        self.ledger.meta_set(clock_ms=self.clock.now_ms())
        self.ledger.flush()
        self.run_state.stopped = True
        snap = self.status.snapshot()
        self.status_writer.close()
        self.status_writer.write_now(snap)
        if self.metrics_exporter is not None:
            self.metrics_exporter.close()
        try:
            self.broker.close()
        finally:
            try:
                self.ledger.close()
            finally:
                self.state_lock.release()  # last: another kernel may open this state dir now
        log.info("kernel stopped")
