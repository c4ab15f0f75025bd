"""What the tick has changed and not yet written: slots to persist, cycles to record,
and whether status.json should go out at once.

Shared by every room that changes a slot or something status.json shows; emptied in one
transaction by the tick's persist step or by a command's result (so a command is never
remembered as applied without the state changes made before it).
"""
from __future__ import annotations

from .ledger import CycleRecord

__all__ = ["Changes"]


class Changes:
    def __init__(self) -> None:
        self.status_urgent = True
        self.dirty_slots: set[str] = set()
        self.cycle_records: list[CycleRecord] = []

    def mark_slot(self, slot_id: str) -> None:
        self.dirty_slots.add(slot_id)

    def take(self) -> tuple[list[CycleRecord], set[str]]:
        """The cycle records and dirty slot ids so far; both start empty again."""
        records, self.cycle_records = self.cycle_records, []
        ids, self.dirty_slots = self.dirty_slots, set()
        return records, ids
