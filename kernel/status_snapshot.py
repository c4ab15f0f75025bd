"""status.json: what the kernel reports, built on the tick thread and written off it.

The dict built here is :class:`kernel.protocol.Status`, key for key (tests hold the two
together); it is published when something urgent changed or every status interval.

Building and publishing it runs no SQL on the tick thread, and writing it waits on no
database: the ledger's part (summary, recent fills, each slot's book and resting orders) comes
from the counters the ledger keeps in memory (kernel/ledger_counters.py); the broker's cash
(the paper exchange answers from its own SQLite, behind its order commits) is the one read
after the previous status was written, and the clock's bookmark in the ledger is set then too,
on the status writer's thread. A cash that moved meanwhile makes the next tick publish again.

Building costs time in proportion to the slots (a thousand trading slots have a fill nearly
every tick, each one urgent): an urgent status waits until the tick thread has spent at most
1 / URGENT_SPACING of its time building statuses. A halt's status waits for nothing and is
built without the slots: it reuses the previous status's slot entries (and the writer their
encoding); the full one follows at the next tick.
"""
from __future__ import annotations

import math
import os
import time
from collections import deque
from typing import Any

from .brokers import Broker
from .changes import Changes
from .clock import Clock
from .command_stream import CommandStream
from .control_watch import ControlWatch
from .cycle_stats import CycleStats
from . import metrics
from .halt import HaltController
from .ledger import Ledger
from .protocol import PROTOCOL_VERSION, ms_to_iso, utcnow_iso
from .release_drift import WorkingTree
from .run_state import RunState
from .scheduler import Scheduler
from .slot_runtime import EPS, SlotRuntime
from .status_writer import StatusWriter
from .versions import StrategyRegistry

__all__ = ["StatusReport"]

URGENT_SPACING = 4  # an urgent status waits this many times the last build's duration after it


class StatusReport:
    def __init__(self, *, writer: StatusWriter, clock: Clock, broker: Broker, ledger: Ledger,
                 registry: StrategyRegistry, scheduler: Scheduler, slots: dict[str, SlotRuntime],
                 run_state: RunState, halt: HaltController, control: ControlWatch, commands: CommandStream,
                 reloads: deque[dict[str, Any]], cycle_stats: CycleStats, changes: Changes,
                 tick_ms: int, status_interval_ms: int, working_tree: WorkingTree | None = None) -> None:
        self.writer = writer
        self._working_tree = working_tree  # drift: does strategies/ still hold what runs?
        self._clock = clock
        self._broker = broker
        self._ledger = ledger
        self._registry = registry
        self._scheduler = scheduler
        self._slots = slots
        self._run = run_state
        self._halt = halt
        self._control = control
        self._commands = commands
        self._reloads = reloads
        self._stats = cycle_stats
        self._changes = changes
        self._tick_ms = tick_ms
        self._interval_s = status_interval_ms / 1000.0
        self._last_wall = 0.0
        self._next_urgent = 0.0  # monotonic: when an urgent status may be built again
        self._last: dict[str, Any] | None = None  # the last status published (its slots are reused by a halt's)
        self.pid = os.getpid()
        self.started_at = utcnow_iso()
        self.reconciled: dict[str, Any] | None = None  # what startup reconciliation found
        self.metrics_url: str | None = None  # the Prometheus exporter's, once it listens (kernel/metrics.py)
        self._cash = self._read_cash()  # as of the last status written (see the module doc)

    def maybe_publish(self) -> None:
        now = time.monotonic()
        if (self._changes.status_urgent and now >= self._next_urgent) or now - self._last_wall >= self._interval_s:
            self.publish()

    def publish(self) -> None:
        """Build the snapshot from memory and hand it to the writer; after writing it, the
        writer's thread sets the clock bookmark and reads the cash for the next one."""
        self._changes.status_urgent = False
        t0 = self._last_wall = time.monotonic()
        now = self._clock.now_ms()
        snap, marked = self._build(now)
        cash = self._cash
        self._set_cash(snap, marked, cash)
        metrics.status_published(cash=cash, equity=snap["ledger"]["equity"])
        self._last = snap
        self.writer.publish(snap, after=lambda: self._after_write(now, cash))
        self._next_urgent = time.monotonic() + URGENT_SPACING * (time.monotonic() - t0)

    def publish_halted(self) -> None:
        """The halt's first status, at once: the previous status's slot entries and cash
        with everything else as it is now; the full status follows at the next tick."""
        last = self._last
        if last is None:
            self.publish()
            return
        now = self._clock.now_ms()
        snap = self._top(now, slots=last["slots"], unrealized_total=last["ledger"]["unrealized_pnl"])
        for key in ("cash", "equity"):
            snap["ledger"][key] = last["ledger"][key]
        self.writer.publish(snap)
        self._changes.status_urgent = True
        self._next_urgent = 0.0

    def snapshot(self) -> dict[str, Any]:
        """The whole status, built on the calling thread with the broker's cash read now."""
        snap, marked = self._build(self._clock.now_ms())
        self._set_cash(snap, marked, self._read_cash())
        return snap

    def _after_write(self, clock_ms: int, cash_shown: float | None) -> None:
        """On the writer's thread, once a published status is written."""
        # Where the clock was, so a restarted simulated clock resumes from there.
        self._ledger.meta_set(clock_ms=clock_ms, _durable=False)
        self._cash = self._read_cash()
        if self._cash != cash_shown:
            self._changes.status_urgent = True  # the next tick shows the cash as it is now

    def _read_cash(self) -> float | None:
        try:
            # A remote broker answers from a cache refreshed off this thread: no request per status.
            return self._broker.cached_balances().get("USDT")
        except Exception:  # noqa: BLE001
            return None

    @staticmethod
    def _set_cash(snap: dict[str, Any], marked: float, cash: float | None) -> None:
        ledger = snap["ledger"]
        ledger["cash"] = cash
        ledger["equity"] = (cash + marked) if cash is not None else None

    def _build(self, now: int) -> tuple[dict[str, Any], float]:
        """The snapshot from memory alone (its cash and equity set by _set_cash), and the
        positions' marked value that equity adds to the cash."""
        slots, unrealized_total, marked = self._slot_entries()
        return self._top(now, slots=slots, unrealized_total=unrealized_total), marked

    def _top(self, now: int, *, slots: list[dict[str, Any]], unrealized_total: float | None) -> dict[str, Any]:
        """Everything but the slot entries (given), built now; cash and equity still None."""
        registry = self._registry
        strategies = {}
        for name, v in sorted(registry.current.items()):
            prev = registry.previous.get(name)
            strategies[name] = {"version": v.number, "sha256": v.sha256, "loaded_at": v.loaded_at,
                                "files": v.files, "previous": prev.describe() if prev else None,
                                "working_tree": self._working_tree.describe(v) if self._working_tree else None}
            # A canary (the running one, else the last that ended) and a running shadow (kernel/canary.py, shadow.py).
            canary = registry.canary.get(name) or registry.last_canary.get(name)
            shadow = registry.shadow.get(name)
            strategies[name]["canary"] = canary.describe() if canary is not None else None
            strategies[name]["shadow"] = shadow.describe() if shadow is not None else None
        counters = self._ledger.counters
        ledger = counters.summary()
        ledger["cash"] = None
        ledger["equity"] = None
        ledger["unrealized_pnl"] = unrealized_total
        ledger["reconciled"] = dict(self.reconciled) if self.reconciled else None
        reloads = self._reloads
        return {
            "protocol": PROTOCOL_VERSION,
            "state": self._run.state_name(halted=self._halt.engaged),
            "heartbeat_at": utcnow_iso(),
            "clock_at": ms_to_iso(now),
            # JSON has no infinity: an unbounded replay (--speed inf) reports null, never a float inf.
            "speed": self._clock.speed if math.isfinite(self._clock.speed) else None,
            "tick": self._run.tick,
            "tick_ms": self._tick_ms,
            "pid": self.pid,
            "started_at": self.started_at,
            "halt": self._halt.state.status(),
            "broker": self._broker.describe(),
            "strategies": strategies,
            "reload": reloads[-1] if reloads else {},
            "reloads": list(reloads)[-20:],
            "commands": list(self._commands.recent),
            "pending_commands": self._commands.pending_ids,
            "control_error": self._control.error,
            "slots": slots,
            "fills": counters.recent_fills(),
            "ledger": ledger,
            "cycles": self._stats.status(halt_observed_tick=self._halt.observed_tick),
            "metrics_url": self.metrics_url,
        }

    def _slot_entries(self) -> tuple[list[dict[str, Any]], float, float]:
        """Each slot's entry, the unrealized P&L of all, and the positions' marked value."""
        slots = []
        unrealized_total = 0.0
        marked = 0.0
        scheduling = self._run.running and not self._halt.engaged
        counters = self._ledger.counters  # in memory (kernel/ledger_counters.py): no SQL here
        books = counters.positions()  # round trips, dust
        resting = counters.resting_by_slot()  # limit orders resting at the broker (kernel.resting_orders)
        for s in self._slots.values():
            book = books.get(s.id)
            unrealized = None
            if s.position_qty > EPS and s.last_price is not None and s.entry_price is not None:
                unrealized = s.position_qty * (s.last_price - s.entry_price)
                unrealized_total += unrealized
                marked += s.position_qty * s.last_price
            elif s.position_qty > EPS and s.entry_price is not None:
                marked += s.position_qty * s.entry_price
            # The version its next cycle runs: the current one of the strategy it will run then
            # (a pending config's, if one waits); what its last cycle ran is reported beside it.
            v = self._registry.version_for((s.pending_config or s.config).strategy, s.id)  # a canary's on its slots
            nxt = self._scheduler.next_close(s.id) if scheduling else None
            slots.append({
                "id": s.id, "symbol": s.config.symbol, "timeframe": s.config.timeframe,
                "strategy": s.config.strategy, "strategy_version": v.number if v else None,
                "strategy_sha256": v.sha256 if v else None, "last_cycle_version": s.last_cycle_version,
                "last_cycle_sha256": s.last_cycle_sha256, "state": s.state, "fault": s.fault,
                "position": {"qty": s.position_qty, "entry_price": s.entry_price,
                             "realized_pnl": book.realized_pnl if book else s.realized_pnl,
                             "trades": book.trades if book else 0, "wins": book.wins if book else 0},
                "last_cycle_at": ms_to_iso(s.last_cycle_ms), "next_cycle_at": ms_to_iso(nxt),
                "cycles": s.cycles, "missed_cycles": s.missed_cycles, "late_cycles": s.late_cycles,
                "errors": s.errors, "last_price": s.last_price, "unrealized_pnl": unrealized,
                "last_order": s.last_order,
                "dust_qty": book.dust_qty if book else 0.0, "unsellable": book.unsellable if book else None,
                "resting_orders": resting.get(s.id, []),
                "config": s.config.model_dump(mode="json"),
            })
        return slots, unrealized_total, marked

