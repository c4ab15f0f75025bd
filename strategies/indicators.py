"""Pure indicator functions shared by the strategies (imported relatively:
``from .indicators import ema``).

Every series function takes a sequence of floats and returns a ``list[float]`` of
the same length, aligned with its input: element ``i`` is the indicator's value
once ``values[i]`` is known, and ``NaN`` where there is not yet enough data.
Nothing here keeps state between calls; each call is O(len(values)).

Conventions (the usual ones, spelled out because they change the numbers):

- ``sma(values, n)[i]`` is the mean of ``values[i-n+1 : i+1]``.
- ``ema(values, n)`` uses ``alpha = 2 / (n + 1)`` and is seeded with the SMA of the
  first ``n`` values (at index ``n - 1``).
- ``rsi(values, n)`` is Wilder's: the first average gain/loss is the simple mean of
  the first ``n`` changes (value at index ``n``), then
  ``avg = (avg * (n - 1) + current) / n``. With no losses the RSI is 100, with no
  gains 0, with neither (a flat series) 50.
- ``highest``/``lowest(values, n)[i]`` are the max/min of the last ``n`` values up
  to and including ``i``.
- ``atr(highs, lows, closes, n)`` is Wilder's average true range, first value at
  index ``n`` (the first candle has no previous close, so no true range).

Warm-up (docs/strategies.md, "Indicators"): a recursive average computed over a window
differs from the one computed over the full history only by its seed, whose weight after
``k`` more bars is ``(1 - alpha) ** k``. :func:`settle_bars` is the ``k`` that brings that
weight under :data:`SEED_WEIGHT`; the strategies' ``warmup`` adds it to the seed's own bars.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Sequence

NAN = math.nan

# The weight left to an EMA's (or Wilder average's) seed at the end of a warm-up. The
# error against the full-history value is this weight times the seed's own deviation
# (a few percent of the price for an EMA), so 1e-8 keeps it well under 1e-6 relative.
SEED_WEIGHT = 1e-8


def _check_period(period: int) -> int:
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ValueError(f"period must be an integer >= 1, not {period!r}")
    return period


def is_nan(x: float) -> bool:
    return x != x  # noqa: PLR0124 - the NaN test that needs no import by callers


def settle_bars(alpha: float, weight: float = SEED_WEIGHT) -> int:
    """The fewest bars ``k`` with ``(1 - alpha) ** k <= weight``: after them, a recursive
    average (EMA: ``alpha = 2/(n+1)``; Wilder: ``alpha = 1/n``) has forgotten its seed to
    within ``weight``."""
    if not 0.0 < alpha <= 1.0 or not 0.0 < weight < 1.0:
        raise ValueError(f"need 0 < alpha <= 1 and 0 < weight < 1, not {alpha!r}, {weight!r}")
    if alpha == 1.0:
        return 1
    k = math.ceil(math.log(weight) / math.log1p(-alpha))
    while k > 1 and (1.0 - alpha) ** (k - 1) <= weight:  # guard against rounding up one too many
        k -= 1
    while (1.0 - alpha) ** k > weight:
        k += 1
    return k


def ema_warmup(period: int, extra: int = 0) -> int:
    """Candles for ``ema(values, period)[-1 - extra]`` to equal the full-history EMA to
    within :data:`SEED_WEIGHT` of the seed's deviation: the seed's ``period`` candles, then
    :func:`settle_bars`."""
    _check_period(period)
    return period + settle_bars(2.0 / (period + 1)) + extra


def rsi_warmup(period: int, extra: int = 0) -> int:
    """Candles for ``rsi(values, period)[-1 - extra]`` to equal the full-history RSI the
    same way: ``period + 1`` candles for the seed's ``period`` changes, then the settling
    of Wilder's averages (``alpha = 1/period``)."""
    _check_period(period)
    return period + 1 + settle_bars(1.0 / period) + extra


def sma(values: Sequence[float], period: int) -> list[float]:
    """Simple moving average, NaN for the first ``period - 1`` values."""
    _check_period(period)
    out = [NAN] * len(values)
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= period:
            total -= values[i - period]
        if i >= period - 1:
            out[i] = total / period
    return out


def ema(values: Sequence[float], period: int) -> list[float]:
    """Exponential moving average (alpha = 2/(period+1)), seeded with the SMA of the
    first ``period`` values; NaN before that."""
    _check_period(period)
    n = len(values)
    out = [NAN] * n
    if n < period:
        return out
    alpha = 2.0 / (period + 1)
    prev = sum(values[:period]) / period
    out[period - 1] = prev
    for i in range(period, n):
        prev = prev + alpha * (values[i] - prev)
        out[i] = prev
    return out


def _rsi_from(avg_gain: float, avg_loss: float) -> float:
    if avg_loss == 0.0:
        return 50.0 if avg_gain == 0.0 else 100.0
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)


def rsi(values: Sequence[float], period: int = 14) -> list[float]:
    """Wilder's RSI, NaN for the first ``period`` values (it needs ``period`` changes)."""
    _check_period(period)
    n = len(values)
    out = [NAN] * n
    if n <= period:
        return out
    gain = loss = 0.0
    for i in range(1, period + 1):
        change = values[i] - values[i - 1]
        if change > 0:
            gain += change
        else:
            loss -= change
    avg_gain = gain / period
    avg_loss = loss / period
    out[period] = _rsi_from(avg_gain, avg_loss)
    for i in range(period + 1, n):
        change = values[i] - values[i - 1]
        g = change if change > 0 else 0.0
        lo = -change if change < 0 else 0.0
        avg_gain = (avg_gain * (period - 1) + g) / period
        avg_loss = (avg_loss * (period - 1) + lo) / period
        out[i] = _rsi_from(avg_gain, avg_loss)
    return out


def _rolling_extreme(values: Sequence[float], period: int, want_max: bool) -> list[float]:
    _check_period(period)
    out = [NAN] * len(values)
    window: deque[int] = deque()  # indices, values monotonic (decreasing for max)
    for i, v in enumerate(values):
        if want_max:
            while window and values[window[-1]] <= v:
                window.pop()
        else:
            while window and values[window[-1]] >= v:
                window.pop()
        window.append(i)
        if window[0] <= i - period:
            window.popleft()
        if i >= period - 1:
            out[i] = values[window[0]]
    return out


def highest(values: Sequence[float], period: int) -> list[float]:
    """Rolling max over the last ``period`` values (current one included)."""
    return _rolling_extreme(values, period, True)


def lowest(values: Sequence[float], period: int) -> list[float]:
    """Rolling min over the last ``period`` values (current one included)."""
    return _rolling_extreme(values, period, False)


def true_range(
    highs: Sequence[float], lows: Sequence[float], closes: Sequence[float]
) -> list[float]:
    """True range per candle; NaN for the first (no previous close)."""
    if not (len(highs) == len(lows) == len(closes)):
        raise ValueError("highs, lows and closes must have the same length")
    out = [NAN] * len(closes)
    for i in range(1, len(closes)):
        pc = closes[i - 1]
        out[i] = max(highs[i] - lows[i], abs(highs[i] - pc), abs(lows[i] - pc))
    return out


def atr(
    highs: Sequence[float], lows: Sequence[float], closes: Sequence[float], period: int = 14
) -> list[float]:
    """Wilder's average true range: the mean of the first ``period`` true ranges at
    index ``period``, then ``(prev * (period - 1) + tr) / period``."""
    _check_period(period)
    tr = true_range(highs, lows, closes)
    n = len(tr)
    out = [NAN] * n
    if n <= period:
        return out
    prev = sum(tr[1 : period + 1]) / period
    out[period] = prev
    for i in range(period + 1, n):
        prev = (prev * (period - 1) + tr[i]) / period
        out[i] = prev
    return out


# ------------------------------------------------------------------ bar bookkeeping

_UNIT_MS = (("m", 60_000), ("h", 3_600_000), ("d", 86_400_000), ("w", 604_800_000))


def timeframe_ms(timeframe: str) -> int | None:
    """``"5m"`` -> 300000, ``"4h"`` -> 14400000; None if it cannot be read."""
    if not isinstance(timeframe, str) or len(timeframe) < 2:
        return None
    number, unit = timeframe[:-1], timeframe[-1]
    if not number.isdigit() or int(number) <= 0:
        return None
    for u, ms in _UNIT_MS:
        if u == unit:
            return int(number) * ms
    return None


def bars_since(candle_ts: Sequence[int], timeframe: str, since_ts: int) -> int:
    """How many bars have closed after the bar that opened at ``since_ts``, as of the
    last of ``candle_ts`` (open times, oldest first). Uses the timeframe's length, so
    it counts wall-clock bars even when ``since_ts`` is older than the window, and is
    idempotent (evaluating the same candles twice gives the same count). Falls back to
    counting candles when the timeframe cannot be read."""
    if not candle_ts:
        return 0
    last = candle_ts[-1]
    if last <= since_ts:
        return 0
    step = timeframe_ms(timeframe)
    if step:
        return int((last - since_ts) // step)
    return sum(1 for ts in candle_ts if ts > since_ts)
