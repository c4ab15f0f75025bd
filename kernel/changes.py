"""What the tick has changed and not yet written: slots to persist, cycles to record,
and whether status.json should go out at once.

Shared by every room that changes a slot or something status.json shows; emptied in one
transaction by the tick's persist step or by a command's result (so a command is never
remembered as applied without the state changes made before it).
"""
from __future__ import annotations

from typing import Callable

from .ledger import CycleRecord

__all__ = ["Changes"]


class Changes:
    def __init__(self) -> None:
        self.status_urgent = True
        self.dirty_slots: set[str] = set()
        self.cycle_records: list[CycleRecord] = []
        # Waits until the bookkeeping handed to its writer is written (kernel/bookkeeping_writer.py).
        self.wait_written: Callable[[], object] = lambda: None

    def mark_slot(self, slot_id: str) -> None:
        self.dirty_slots.add(slot_id)

    def take(self, *, after_queued: bool = True) -> tuple[list[CycleRecord], set[str]]:
        """The cycle records and dirty slot ids so far; both start empty again. A caller that
        writes them itself (a command's record) gets them once the bookkeeping queued before is
        written (``after_queued``), so a slot row never goes back to an older value; the tick's
        own persist step queues them behind it instead."""
        if after_queued:
            self.wait_written()
        records, self.cycle_records = self.cycle_records, []
        ids, self.dirty_slots = self.dirty_slots, set()
        return records, ids
