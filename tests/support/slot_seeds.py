"""Slots written into a state dir before its kernel first starts (as if added earlier), through
the kernel's own ``Ledger.add_slots``, so the rows are exactly what a kernel persists."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kernel.ledger import LEDGER_FILE, Ledger
from kernel.protocol import SlotConfig


def seed_slots(state_dir: Path, configs: Iterable[SlotConfig]) -> list[SlotConfig]:
    configs = list(configs)
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(state_dir / LEDGER_FILE)
    try:
        ledger.add_slots([c.model_dump(mode="json") for c in configs])
    finally:
        ledger.close()
    return configs
