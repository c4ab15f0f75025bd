"""Candle-aligned scheduler: which slot's cycle is due at which candle close.

A heap keyed by each slot's next close keeps a tick O(due slots · log n), so a kernel
with thousands of slots does not scan them all every tick.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from .protocol import TIMEFRAMES


def timeframe_ms(timeframe: str) -> int:
    return TIMEFRAMES[timeframe] * 1000


def last_close_at_or_before(now_ms: int, tf_ms: int) -> int:
    return (now_ms // tf_ms) * tf_ms


def next_close_after(now_ms: int, tf_ms: int) -> int:
    return (now_ms // tf_ms) * tf_ms + tf_ms


@dataclass(slots=True)
class Due:
    slot_id: str
    close_ms: int
    missed: int  # closes skipped before this one (the kernel was late, or the slot was busy)


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._next: dict[str, int] = {}  # slot id -> next close it is waiting for
        self._tf: dict[str, int] = {}
        self._gen: dict[str, int] = {}  # invalidates stale heap entries

    def __len__(self) -> int:
        return len(self._next)

    def add(self, slot_id: str, timeframe: str, now_ms: int) -> None:
        tf = timeframe_ms(timeframe)
        self._tf[slot_id] = tf
        self._push(slot_id, next_close_after(now_ms, tf))

    def remove(self, slot_id: str) -> None:
        self._next.pop(slot_id, None)
        self._tf.pop(slot_id, None)
        self._gen[slot_id] = self._gen.get(slot_id, 0) + 1

    def reset(self, now_ms: int) -> None:
        """Forget closes that passed while the scheduler was off: they are not missed."""
        for slot_id, tf in list(self._tf.items()):
            self._push(slot_id, next_close_after(now_ms, tf))

    def next_close(self, slot_id: str) -> int | None:
        return self._next.get(slot_id)

    def _push(self, slot_id: str, close_ms: int) -> None:
        gen = self._gen.get(slot_id, 0) + 1
        self._gen[slot_id] = gen
        self._next[slot_id] = close_ms
        heapq.heappush(self._heap, (close_ms, gen, slot_id))

    def due(self, now_ms: int) -> list[Due]:
        out: list[Due] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            close_ms, gen, slot_id = heapq.heappop(heap)
            if self._gen.get(slot_id) != gen or slot_id not in self._tf:
                continue  # stale entry (slot removed or rescheduled)
            tf = self._tf[slot_id]
            latest = last_close_at_or_before(now_ms, tf)
            missed = (latest - close_ms) // tf
            out.append(Due(slot_id, latest, missed))
            self._push(slot_id, latest + tf)
        return out
