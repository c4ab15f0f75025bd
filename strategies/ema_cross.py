"""EMA crossover, long only.

Enter when the fast EMA of closes crosses above the slow EMA on the last closed
candle; exit when the fast EMA is below the slow one, when the close falls
``stop_loss_pct`` below the entry price (optional), or after ``max_bars_held``
bars in the trade (optional).

State (``STATE_SCHEMA = 1``): ``{"entry_ts": <open time of the entry candle>,
"bars_in_trade": <bars closed since>}`` while in a position, ``{}`` when flat.
The bar count is derived from ``entry_ts`` and the timeframe, so evaluating the
same candles twice gives the same answer.
"""
from __future__ import annotations

from typing import Any

from kernel.strategy_api import Context, Decision, Field, StrategyParams

from .state import int_of, params_of

from .indicators import bars_since, ema, ema_warmup

STATE_SCHEMA = 1


class Params(StrategyParams):
    fast: int = Field(12, ge=2, le=500, description="fast EMA period (candles)")
    slow: int = Field(26, ge=3, le=1000, description="slow EMA period (candles)")
    stop_loss_pct: float | None = Field(
        None, gt=0, lt=1, description="exit when close <= entry * (1 - this); 0.05 = 5%"
    )
    max_bars_held: int | None = Field(None, ge=1, le=100_000, description="exit after this many bars")

    def model_post_init(self, __context: Any) -> None:
        # Cross-field check. A ValueError raised here reaches the caller as a
        # pydantic ValidationError, like any field error; model_post_init needs
        # no import beyond kernel.strategy_api (model_validator would need pydantic).
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")


def warmup(params: Params) -> int:
    """Enough candles for the slow EMA on the previous bar (the cross compares two bars)
    to equal its full-history value: its seed's weight is under 1e-8 by then
    (docs/strategies.md, "Indicators"). 267 candles for slow=26."""
    return ema_warmup(params.slow, extra=1)


def evaluate(ctx: Context) -> Decision:
    p = params_of(ctx, Params)
    candles = ctx.candles
    # Fewer candles than the warm-up means the feed has no older ones (a replay's first
    # bars): the window is then the full history. Signals need both EMAs on two bars.
    enough = len(candles) >= p.slow + 1

    if ctx.position > 0:
        if not candles:
            return Decision.hold("warming up")
        close = candles[-1].close
        entry_ts = int_of(ctx.state, "entry_ts")
        if entry_ts is None:  # state lost or position opened elsewhere: count from now
            entry_ts = candles[-1].ts
        bars = bars_since([c.ts for c in candles], ctx.timeframe, entry_ts)
        state = {"entry_ts": entry_ts, "bars_in_trade": bars}
        if p.stop_loss_pct is not None and ctx.entry_price:
            stop = ctx.entry_price * (1.0 - p.stop_loss_pct)
            if close <= stop:
                return Decision.exit(f"stop-loss: close {close:.6g} <= {stop:.6g}", state)
        if p.max_bars_held is not None and bars >= p.max_bars_held:
            return Decision.exit(f"max bars held ({bars} >= {p.max_bars_held})", state)
        if not enough:
            return Decision.hold("warming up", state)
        closes = [c.close for c in candles]
        fast, slow = ema(closes, p.fast)[-1], ema(closes, p.slow)[-1]
        if fast < slow:
            return Decision.exit(f"cross down: fast {fast:.6g} < slow {slow:.6g}", state)
        return Decision.hold(f"in trade {bars} bars, fast above slow", state)

    if not enough:
        return Decision.hold("warming up", {})
    if not ctx.entries_allowed:
        return Decision.hold("entries not allowed", {})
    closes = [c.close for c in candles]
    fast_line, slow_line = ema(closes, p.fast), ema(closes, p.slow)
    f0, f1, s0, s1 = fast_line[-2], fast_line[-1], slow_line[-2], slow_line[-1]
    if f0 <= s0 and f1 > s1:
        return Decision.enter(
            f"cross up: fast {f1:.6g} > slow {s1:.6g}",
            {"entry_ts": candles[-1].ts, "bars_in_trade": 0},
        )
    return Decision.hold(f"no cross up: fast {f1:.6g}, slow {s1:.6g}", {})
