"""Startup: the slots the ledger holds, and the closes that passed while the kernel was down."""
from __future__ import annotations

import logging

from pydantic import ValidationError

from .changes import Changes
from .cycle_stats import CycleStats
from .ledger import Ledger
from .protocol import SlotConfig
from .scheduler import Scheduler, timeframe_ms
from .slot_runtime import SlotRuntime

__all__ = ["load_slots", "schedule_slots"]

log = logging.getLogger("kernel")


def load_slots(*, slots: dict[str, SlotRuntime], ledger: Ledger, demo: bool) -> None:
    """Fill ``slots`` from the ledger (the demo's slots on a first start with ``demo``),
    with their positions."""
    rows = ledger.load_slots()
    if not rows and demo:
        from .demo import demo_slots

        for cfg in demo_slots():
            slots[cfg.id] = SlotRuntime(config=cfg)
        ledger.save_slots([s.persist_row() for s in slots.values()])
    for row in rows:
        try:
            cfg = SlotConfig.model_validate(row["config"])
        except ValidationError as exc:
            log.error("slot %s has an invalid stored config, skipped: %s", row["id"], exc)
            continue
        slots[cfg.id] = SlotRuntime(
            config=cfg, paused=row["paused"], fault=row["fault"],
            strategy_state=row["strategy_state"], state_schema=row["state_schema"],
            cycles=row["cycles"], missed_cycles=row["missed_cycles"],
            late_cycles=row["late_cycles"], errors=row["errors"], last_cycle_ms=row["last_cycle_ms"],
        )
    for slot_id, pos in ledger.positions().items():
        if slot_id in slots:
            slots[slot_id].take_position(pos)


def schedule_slots(*, slots: dict[str, SlotRuntime], scheduler: Scheduler, ledger: Ledger, now_ms: int,
                   trading: bool, stats: CycleStats, changes: Changes) -> None:
    """Every slot waits for its next close; a trading kernel counts the closes it slept through."""
    # The clock stored in the ledger is written about once a second, cycles every tick: after
    # a kill -9 it can lag the last candle run. Never schedule a candle that already ran.
    last_run = ledger.last_candles()
    for s in slots.values():
        scheduler.add(s.id, s.config.timeframe, max(now_ms, last_run.get(s.id, now_ms)))
        last = last_run.get(s.id)
        if trading and s.config.enabled and last is not None:
            # Closes that passed while the process was down had no cycle: that is the blind
            # window of a restart, and it is counted, not hidden.
            tf = timeframe_ms(s.config.timeframe)
            lost = max(0, ((now_ms // tf) * tf - last) // tf)
            if lost:
                s.missed_cycles += lost
                stats.totals["missed"] += lost
                stats.totals["missed_while_down"] += lost
                changes.mark_slot(s.id)
