"""A slot at run time: its config, its counters, its strategy state and its position.

The kernel's slots table is a plain ``dict[str, SlotRuntime]`` shared by the rooms
(cycles, commands, reloads, reconciliation, status); only the tick thread adds to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .changes import Changes
from .clock import Clock
from .ledger import Position
from .protocol import SlotConfig
from .scheduler import Scheduler
from .workers import Job

__all__ = ["EPS", "SlotRuntime"]

EPS = 1e-12  # a quantity at or below this is nothing: a position this small is flat


@dataclass
class SlotRuntime:
    config: SlotConfig
    paused: bool = False
    fault: str | None = None
    strategy_state: dict[str, Any] = field(default_factory=dict)
    state_schema: int | None = None
    cycles: int = 0
    missed_cycles: int = 0
    late_cycles: int = 0
    errors: int = 0
    last_cycle_ms: int | None = None
    last_cycle_version: int | None = None  # the version its last cycle ran (not stored: None after a restart)
    last_cycle_sha256: str | None = None
    inflight: Job | None = None
    pinned_sha256: str | None = None  # what its running cycle pinned (set by that cycle's worker)
    pending_config: SlotConfig | None = None
    position_qty: float = 0.0
    entry_price: float | None = None
    realized_pnl: float = 0.0
    last_price: float | None = None
    last_order: dict[str, Any] | None = None  # the last order's summary: rejected, unknown, filled...

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def state(self) -> str:
        if not self.config.enabled:
            return "disabled"
        return "paused" if (self.paused or self.fault) else "active"

    @property
    def busy(self) -> bool:
        """A job of this slot (cycle or flatten) is still running."""
        return self.inflight is not None and not self.inflight.done.is_set()

    def take_position(self, pos: Position) -> None:
        self.position_qty, self.entry_price, self.realized_pnl = pos.qty, pos.entry_price, pos.realized_pnl

    def apply_pending_config(self, *, scheduler: Scheduler, clock: Clock, changes: Changes) -> None:
        """A config change waits for the slot's running job; applied between jobs."""
        cfg = self.pending_config
        if cfg is None:
            return
        self.pending_config = None
        old = self.config
        self.config = cfg
        if cfg.strategy != old.strategy:
            self.strategy_state, self.state_schema = {}, None
        if cfg.timeframe != old.timeframe:
            scheduler.remove(self.id)
            scheduler.add(self.id, cfg.timeframe, clock.now_ms())
        changes.mark_slot(self.id)
        changes.status_urgent = True

    def persist_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "config": self.config.model_dump(mode="json"),
            "paused": self.paused,
            "fault": self.fault,
            "strategy_state": self.strategy_state,
            "state_schema": self.state_schema,
            "cycles": self.cycles,
            "missed_cycles": self.missed_cycles,
            "late_cycles": self.late_cycles,
            "errors": self.errors,
            "last_cycle_ms": self.last_cycle_ms,
        }
