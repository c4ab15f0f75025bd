"""RSI mean reversion, long only.

Enter when Wilder's RSI(``period``) of closes is below ``oversold``; exit when it
is above ``overbought``, or after ``max_bars_held`` bars in the trade (optional).

State (``STATE_SCHEMA = 1``): ``{"entry_ts": <open time of the entry candle>,
"bars_in_trade": <bars closed since>}`` while in a position, ``{}`` when flat.
"""
from __future__ import annotations

from typing import Any

from kernel.strategy_api import Context, Decision, Field, StrategyParams

from .state import int_of, params_of

from .indicators import bars_since, rsi, rsi_warmup

STATE_SCHEMA = 1


class Params(StrategyParams):
    period: int = Field(14, ge=2, le=500, description="RSI period (candles)")
    oversold: float = Field(30.0, gt=0, lt=100, description="enter below this RSI")
    overbought: float = Field(70.0, gt=0, lt=100, description="exit above this RSI")
    max_bars_held: int | None = Field(None, ge=1, le=100_000, description="exit after this many bars")

    def model_post_init(self, __context: Any) -> None:
        # Cross-field check. A ValueError raised here reaches the caller as a
        # pydantic ValidationError, like any field error; model_post_init needs
        # no import beyond kernel.strategy_api (model_validator would need pydantic).
        if self.oversold >= self.overbought:
            raise ValueError(
                f"oversold ({self.oversold}) must be below overbought ({self.overbought})"
            )


def warmup(params: Params) -> int:
    """Enough candles for Wilder's averages to forget their seed (weight under 1e-8), so
    the RSI equals its full-history value (docs/strategies.md, "Indicators"). 264 candles
    for period=14."""
    return rsi_warmup(params.period)


def evaluate(ctx: Context) -> Decision:
    p = params_of(ctx, Params)
    candles = ctx.candles
    # Fewer candles than the warm-up means the feed has no older ones (a replay's first
    # bars): the window is then the full history. The RSI needs ``period`` changes.
    enough = len(candles) >= p.period + 1

    if ctx.position > 0:
        if not candles:
            return Decision.hold("warming up")
        entry_ts = int_of(ctx.state, "entry_ts")
        if entry_ts is None:  # state lost or position opened elsewhere: count from now
            entry_ts = candles[-1].ts
        bars = bars_since([c.ts for c in candles], ctx.timeframe, entry_ts)
        state = {"entry_ts": entry_ts, "bars_in_trade": bars}
        if p.max_bars_held is not None and bars >= p.max_bars_held:
            return Decision.exit(f"max bars held ({bars} >= {p.max_bars_held})", state)
        if not enough:
            return Decision.hold("warming up", state)
        value = rsi([c.close for c in candles], p.period)[-1]
        if value > p.overbought:
            return Decision.exit(f"RSI {value:.1f} > {p.overbought:g}", state)
        return Decision.hold(f"in trade {bars} bars, RSI {value:.1f}", state)

    if not enough:
        return Decision.hold("warming up", {})
    if not ctx.entries_allowed:
        return Decision.hold("entries not allowed", {})
    value = rsi([c.close for c in candles], p.period)[-1]
    if value < p.oversold:
        return Decision.enter(
            f"RSI {value:.1f} < {p.oversold:g}",
            {"entry_ts": candles[-1].ts, "bars_in_trade": 0},
        )
    return Decision.hold(f"RSI {value:.1f}", {})
