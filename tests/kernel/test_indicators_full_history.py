"""The strategies' EMA and RSI equal the full-history values (issue 12, item 5).

A strategy sees only its warm-up window each cycle; its indicators are re-seeded at the
window's start. The warm-up is long enough for the seed to be forgotten (docs/strategies.md,
"Indicators"), so at every bar the strategy's EMA/RSI equal those of one pass over the whole
series within 1e-6 relative, and its signals land on the same bars as the full-history ones;
before the warm-up is reached (a replay's first bars) the window is the whole history.
The references here are plain loops over the full series, written for this test."""
from __future__ import annotations

import importlib
import math
import random
from types import MappingProxyType

import pytest

from kernel.strategy_api import Candle, Context

ind = importlib.import_module("strategies.indicators")
ema_cross = importlib.import_module("strategies.ema_cross")
rsi_reversion = importlib.import_module("strategies.rsi_reversion")

TF, TF_MS, T0 = "5m", 300_000, 1_704_067_200_000
BARS = 4000
REL = 1e-6


def random_walk(n: int, seed: int) -> list[float]:
    """A geometric random walk: 0.4 % per bar, with slow regime changes of drift."""
    rnd = random.Random(seed)
    price, out = 30_000.0, []
    drift = 0.0
    for i in range(n):
        if i % 250 == 0:
            drift = rnd.uniform(-0.001, 0.001)
        price *= math.exp(drift + rnd.gauss(0.0, 0.004))
        out.append(price)
    return out


def full_ema(values: list[float], n: int) -> list[float | None]:
    """EMA over the whole series: seed = mean of the first n values, alpha = 2/(n+1)."""
    alpha = 2.0 / (n + 1)
    out: list[float | None] = [None] * len(values)
    acc = 0.0
    for i, v in enumerate(values):
        if i < n - 1:
            acc += v
        elif i == n - 1:
            acc += v
            out[i] = acc / n
        else:
            out[i] = out[i - 1] + alpha * (v - out[i - 1])
    return out


def full_rsi(values: list[float], n: int) -> list[float | None]:
    """Wilder's RSI over the whole series: the first averages are the means of the first
    n changes, then avg = (avg * (n - 1) + x) / n."""
    out: list[float | None] = [None] * len(values)
    gains = losses = 0.0
    ag = al = 0.0
    for i in range(1, len(values)):
        d = values[i] - values[i - 1]
        g, lo = max(d, 0.0), max(-d, 0.0)
        if i < n:
            gains += g
            losses += lo
            continue
        if i == n:
            ag, al = (gains + g) / n, (losses + lo) / n
        else:
            ag, al = (ag * (n - 1) + g) / n, (al * (n - 1) + lo) / n
        out[i] = 100.0 if al == 0 else 100.0 - 100.0 / (1.0 + ag / al)
    return out


def candles_of(closes: list[float]) -> tuple[Candle, ...]:
    return tuple(Candle(T0 + i * TF_MS, c, c * 1.001, c * 0.999, c, 1.0) for i, c in enumerate(closes))


def ctx(module, window, params, position=0.0):
    return Context("t-5m", "BTC/USDT", TF, window[-1].ts + TF_MS, window, position,
                   window[-1].close if position else None, params, MappingProxyType({}), True)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("fast,slow,seed", [(12, 26, 1), (5, 50, 2), (20, 100, 3)])
def test_ema_cross_equals_the_full_history_ema_and_crosses_on_the_same_bars(fast, slow, seed):
    closes = random_walk(BARS, seed)
    candles = candles_of(closes)
    p = ema_cross.Params(fast=fast, slow=slow)
    w = ema_cross.warmup(p)
    ref_fast, ref_slow = full_ema(closes, fast), full_ema(closes, slow)
    worst = 0.0
    ref_up, got_up, ref_below, got_below = [], [], [], []
    # From the first bar with two slow EMAs: before the warm-up is reached the window is
    # all the history there is (a replay's start), after it a sliding window of w candles.
    for i in range(slow, BARS):
        window = candles[max(0, i - w + 1) : i + 1]
        wcloses = [c.close for c in window]
        # what evaluate computes: the indicator over its window, previous bar included
        f, s = ind.ema(wcloses, fast), ind.ema(wcloses, slow)
        for back in (1, 2):
            worst = max(worst, rel(f[-back], ref_fast[i - back + 1]), rel(s[-back], ref_slow[i - back + 1]))
        if ref_fast[i - 1] <= ref_slow[i - 1] and ref_fast[i] > ref_slow[i]:
            ref_up.append(i)
        if ref_fast[i] < ref_slow[i]:
            ref_below.append(i)
        if ema_cross.evaluate(ctx(ema_cross, window, p)).action == "enter":
            got_up.append(i)
        if ema_cross.evaluate(ctx(ema_cross, window, p, position=1.0)).action == "exit":
            got_below.append(i)
    assert worst <= REL, worst
    assert len(ref_up) >= 5  # the series does cross
    assert got_up == ref_up
    assert got_below == ref_below


@pytest.mark.parametrize("period,seed", [(14, 4), (30, 5), (6, 6)])
def test_rsi_reversion_equals_the_full_history_rsi_and_signals_on_the_same_bars(period, seed):
    closes = random_walk(BARS, seed)
    candles = candles_of(closes)
    p = rsi_reversion.Params(period=period, oversold=40, overbought=60)
    w = rsi_reversion.warmup(p)
    ref = full_rsi(closes, period)
    worst = 0.0
    ref_in, got_in, ref_out, got_out = [], [], [], []
    for i in range(period, BARS):
        window = candles[max(0, i - w + 1) : i + 1]
        got = ind.rsi([c.close for c in window], period)[-1]
        worst = max(worst, rel(got, ref[i]))
        if ref[i] < p.oversold:
            ref_in.append(i)
        if ref[i] > p.overbought:
            ref_out.append(i)
        if rsi_reversion.evaluate(ctx(rsi_reversion, window, p)).action == "enter":
            got_in.append(i)
        if rsi_reversion.evaluate(ctx(rsi_reversion, window, p, position=1.0)).action == "exit":
            got_out.append(i)
    assert worst <= REL, worst
    assert ref_in and ref_out
    assert (got_in, got_out) == (ref_in, ref_out)


def test_the_old_short_warmups_were_off():
    """The comparison above has teeth: the former warm-ups (3 slow periods for the EMA,
    4 periods + 1 for the RSI) miss the full-history values by far more than 1e-6."""
    closes = random_walk(BARS, 1)
    ref_slow, ref_rsi = full_ema(closes, 26), full_rsi(closes, 14)
    ema_worst = max(rel(ind.ema(closes[i - 78 + 1 : i + 1], 26)[-1], ref_slow[i]) for i in range(300, BARS))
    rsi_worst = max(rel(ind.rsi(closes[i - 57 + 1 : i + 1], 14)[-1], ref_rsi[i]) for i in range(300, BARS))
    assert ema_worst > 1e-4 and rsi_worst > 1e-4


def test_settle_bars_is_the_fewest_bars_under_the_weight():
    for alpha in (2 / 3, 2 / 27, 2 / 1001, 1 / 14, 1 / 500, 0.5):
        k = ind.settle_bars(alpha)
        assert (1 - alpha) ** k <= 1e-8 < (1 - alpha) ** (k - 1)
    assert ind.settle_bars(1.0) == 1
    # slow=26: 26 seed candles, then 240 bars ((25/27)**240 = 9.5e-9), then the previous bar
    assert ema_cross.warmup(ema_cross.Params()) == 26 + 240 + 1
    # Wilder 14: 15 candles for 14 changes, then 249 bars ((13/14)**249 = 9.7e-9)
    assert rsi_reversion.warmup(rsi_reversion.Params()) == 15 + 249
    with pytest.raises(ValueError):
        ind.settle_bars(0.0)
