"""Donchian breakout with a trailing stop, long only.

Enter when the close is above the highest high of the previous ``lookback``
candles (the current one excluded). Exit when the close falls to the trailing
stop: the highest close since entry times ``1 - trail_pct``. The stop only ever
rises.

State (``STATE_SCHEMA = 1``): ``{"highest_close": float, "stop": float,
"entry_ts": int}`` while in a position, ``{}`` when flat. The stop lives only in
state: a position found without it (state lost) restarts the trail from the
larger of the entry price and the current close.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from kernel.strategy_api import Context, Decision, Field, StrategyParams

from .state import params_of

STATE_SCHEMA = 1


class Params(StrategyParams):
    lookback: int = Field(20, ge=2, le=1000, description="Donchian channel length (candles)")
    trail_pct: float = Field(
        0.02, gt=0, lt=1, description="trailing stop below the highest close; 0.02 = 2%"
    )


def warmup(params: Params) -> int:
    """The channel of the previous ``lookback`` candles plus the current one."""
    return params.lookback + 1


def _positive(state: Mapping[str, Any], key: str) -> float | None:
    v = state.get(key) if isinstance(state, Mapping) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) and v > 0 else None


def evaluate(ctx: Context) -> Decision:
    p = params_of(ctx, Params)
    candles = ctx.candles

    if ctx.position > 0:
        # The trailing stop needs no history: it is evaluated even while warming up.
        if not candles:
            return Decision.hold("warming up")
        last = candles[-1]
        close = last.close
        highest = _positive(ctx.state, "highest_close")
        if highest is None:
            highest = max(ctx.entry_price or close, close)
        highest = max(highest, close)
        stop = highest * (1.0 - p.trail_pct)
        previous_stop = _positive(ctx.state, "stop")
        if previous_stop is not None:
            stop = max(stop, previous_stop)
        entry_ts = ctx.state.get("entry_ts") if isinstance(ctx.state, Mapping) else None
        if not isinstance(entry_ts, int) or isinstance(entry_ts, bool):
            entry_ts = last.ts
        state = {"highest_close": highest, "stop": stop, "entry_ts": entry_ts}
        if close <= stop:
            return Decision.exit(f"trailing stop: close {close:.6g} <= {stop:.6g}", state)
        return Decision.hold(f"in trade, stop {stop:.6g}", state)

    if len(candles) < warmup(p):
        return Decision.hold("warming up", {})
    if not ctx.entries_allowed:
        return Decision.hold("entries not allowed", {})
    last = candles[-1]
    channel_high = max(c.high for c in candles[-p.lookback - 1 : -1])
    if last.close > channel_high:
        return Decision.enter(
            f"breakout: close {last.close:.6g} > {p.lookback}-bar high {channel_high:.6g}",
            {
                "highest_close": last.close,
                "stop": last.close * (1.0 - p.trail_pct),
                "entry_ts": last.ts,
            },
        )
    return Decision.hold(f"below {p.lookback}-bar high {channel_high:.6g}", {})
