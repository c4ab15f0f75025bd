"""The kernel's cycle counters and recent lags, as status.json's ``cycles`` reports them."""
from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["CycleStats", "percentile"]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[k]


class CycleStats:
    def __init__(self) -> None:
        self.totals = {"ran": 0, "missed": 0, "missed_while_down": 0, "late": 0, "faults": 0, "abandoned": 0,
                       "orders": 0, "refused": 0, "halted": 0, "skipped": 0}
        self.lags: deque[int] = deque(maxlen=5000)
        self.lock_waits_ns: deque[int] = deque(maxlen=5000)

    def status(self, *, halt_observed_tick: int | None) -> dict[str, Any]:
        lags = list(self.lags)
        waits = [w / 1000.0 for w in self.lock_waits_ns]
        return {
            **self.totals,
            "lag_ms_p50": percentile(lags, 0.5), "lag_ms_p99": percentile(lags, 0.99),
            "lock_wait_us_p50": percentile(waits, 0.5), "lock_wait_us_p99": percentile(waits, 0.99),
            "lock_wait_us_max": max(waits) if waits else None,
            "halt_observed_tick": halt_observed_tick,
        }
