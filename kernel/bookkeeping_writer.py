"""Cycle bookkeeping (the ledger's ``cycles`` rows and the slot rows that count them) written
off the tick thread: the tick hands each batch over and goes on; one thread writes them, in
order, merging what queued meanwhile into one transaction.

What this may lose to a ``kill -9``: the batches handed over and not yet written (a few ms).
That is bookkeeping the next start re-derives or does without (tests/kernel/test_bookkeeping_writer.py):
the closes whose cycle rows are missing are counted as missed while down, never run twice
(their orders, intent before send, are in the ledger; the scheduler starts after the clock);
positions come from the fills, never from these rows. Orders, intents and fills never pass
through here. Anything that writes slot rows itself (a command's record) or reads these
tables in this process first waits for what is queued (:meth:`flush`): a slot row never goes
back to an older value.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .ledger import CycleRecord, Ledger

__all__ = ["BookkeepingWriter"]

log = logging.getLogger("kernel")

RETRY_S = 0.2  # after a failed write (a full disk): the batch is kept and tried again


class BookkeepingWriter:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._cond = threading.Condition()
        self._records: list[CycleRecord] = []
        self._slots: dict[str, dict[str, Any]] = {}  # slot id -> its newest row
        self._handed = 0  # batches handed over
        self._written = 0  # batches written (all of them up to this number)
        self._writing = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bookkeeping", daemon=True)
        self._thread.start()

    def submit(self, records: list[CycleRecord], slots: list[dict[str, Any]]) -> None:
        """Hand a batch over (tick thread); it is written after every batch handed before it."""
        if not records and not slots:
            return
        with self._cond:
            if self._closed:  # after close (shutdown): written here, as before
                self._ledger.record_cycles_and_slots(records, slots)
                return
            self._records.extend(records)
            for row in slots:
                self._slots.pop(row["id"], None)
                self._slots[row["id"]] = row
            self._handed += 1
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every batch handed over so far is written; False if that took over ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._handed
            while self._written < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
            return True

    @property
    def backlog(self) -> int:
        """Batches handed over and not written yet."""
        with self._cond:
            return self._handed - self._written

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._handed == self._written and not self._closed:
                    self._cond.wait()
                if self._handed == self._written:
                    return
                records, self._records = self._records, []
                slots, self._slots = self._slots, {}
                upto = self._handed
            try:
                self._ledger.record_cycles_and_slots(records, list(slots.values()))
            except Exception:  # noqa: BLE001 - a full disk must not kill the kernel: kept, tried again
                log.exception("cycle bookkeeping not written; trying again")
                with self._cond:
                    self._records[:0] = records
                    for sid, row in slots.items():
                        self._slots.setdefault(sid, row)  # a newer row handed since wins
                time.sleep(RETRY_S)
                continue
            with self._cond:
                self._written = upto
                self._cond.notify_all()

    def close(self) -> None:
        """Write what is queued, then stop (at shutdown, before the ledger closes)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(30)
