"""The strategies and their indicators: hand-computed values, crafted series,
state, params validation, the module rules, and trading on the synthetic feed."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import MappingProxyType

import pytest
from pydantic import ValidationError, create_model

from kernel.strategy_api import Candle, Context, Decision, StrategyParams
from tests.support.strategy_sources import BREAKS_THE_STATIC_RULES

ind = importlib.import_module("strategies.indicators")
ema_cross = importlib.import_module("strategies.ema_cross")
rsi_reversion = importlib.import_module("strategies.rsi_reversion")
breakout = importlib.import_module("strategies.breakout")

STRATEGIES = (ema_cross, rsi_reversion, breakout)
STRATEGY_DIR = Path(ema_cross.__file__).resolve().parent
STRATEGY_FILES = sorted(p for p in STRATEGY_DIR.glob("*.py") if p.name != "__init__.py")

TF = "5m"
TF_MS = 300_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def nan_equal(got, want, tol=1e-9):
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        if isinstance(w, float) and math.isnan(w):
            assert math.isnan(g), (got, want)
        else:
            assert g == pytest.approx(w, abs=tol), (got, want)


def make_candles(closes, highs=None, start=T0):
    out = []
    prev = closes[0]
    for i, c in enumerate(closes):
        hi = highs[i] if highs is not None else max(prev, c) * 1.001
        lo = min(prev, c) * 0.999
        out.append(Candle(start + i * TF_MS, prev, max(hi, prev, c), lo, c, 10.0))
        prev = c
    return tuple(out)


def ctx_for(module, candles, *, position=0.0, entry_price=None, state=None, allowed=True, **params):
    p = module.Params(**params)
    return Context(
        slot="t-5m",
        symbol="BTC/USDT",
        timeframe=TF,
        now_ms=candles[-1].ts + TF_MS if candles else T0,
        candles=tuple(candles),
        position=position,
        entry_price=entry_price,
        params=p,
        state=MappingProxyType(dict(state or {})),
        entries_allowed=allowed,
    )


def simulate(module, candles, params=None, allowed=True, start=None):
    """Run a strategy bar by bar over ``candles`` like the kernel would: a sliding
    window of ``warmup`` candles, fills at the close, state handed back."""
    p = module.Params(**(params or {}))
    w = module.warmup(p)
    position, entry, state = 0.0, None, {}
    events = []
    for i in range(start if start is not None else w - 1, len(candles)):
        window = tuple(candles[max(0, i - w + 1) : i + 1])
        ctx = Context(
            "sim", "BTC/USDT", TF, window[-1].ts + TF_MS, window, position, entry, p,
            MappingProxyType(state), allowed if not callable(allowed) else allowed(i),
        )
        d = module.evaluate(ctx)
        assert isinstance(d, Decision)
        if d.state is not None:
            json.dumps(d.state, allow_nan=False)  # what the kernel will store
            state = d.state
        if d.action == "enter":
            assert position == 0
            position, entry = 1.0, window[-1].close
        elif d.action == "exit":
            assert position > 0
            position, entry = 0.0, None
        events.append((i, d.action, d.reason, dict(state)))
    return events


def actions(events, kind):
    return [i for i, a, _, _ in events if a == kind]


# ====================================================================== indicators


def test_sma_hand_computed():
    nan_equal(ind.sma([1, 2, 3, 4, 5], 3), [math.nan, math.nan, 2.0, 3.0, 4.0])
    nan_equal(ind.sma([2.0, 4.0], 1), [2.0, 4.0])
    nan_equal(ind.sma([1, 2], 3), [math.nan, math.nan])


def test_ema_hand_computed():
    # period 3: alpha 0.5, seeded with the SMA of the first three values (4)
    nan_equal(ind.ema([2, 4, 6, 8, 12, 10], 3), [math.nan, math.nan, 4.0, 6.0, 9.0, 9.5])
    # period 4: alpha 0.4, seed (1+2+3+4)/4 = 2.5; then 2.5+0.4*(10-2.5) = 5.5
    nan_equal(ind.ema([1, 2, 3, 4, 10], 4), [math.nan] * 3 + [2.5, 5.5])
    nan_equal(ind.ema([1.0, 2.0], 3), [math.nan, math.nan])


def test_rsi_wilder_hand_computed():
    # changes: +1, -0.5, +1, +0.5, -1
    # idx 3: avg gain 2/3, avg loss 1/6 -> RS 4 -> 80
    # idx 4: gain (2/3*2 + 0.5)/3 = 11/18, loss (1/6*2)/3 = 1/9 -> RS 5.5 -> 100 - 100/6.5
    # idx 5: gain (11/18*2)/3 = 11/27, loss (1/9*2 + 1)/3 = 11/27 -> RS 1 -> 50
    got = ind.rsi([10, 11, 10.5, 11.5, 12, 11], 3)
    nan_equal(got, [math.nan] * 3 + [80.0, 100 - 100 / 6.5, 50.0])


def test_rsi_extremes():
    assert ind.rsi([1, 2, 3, 4, 5, 6], 3)[-1] == 100.0
    assert ind.rsi([6, 5, 4, 3, 2, 1], 3)[-1] == 0.0
    assert ind.rsi([5, 5, 5, 5, 5], 3)[-1] == 50.0
    assert all(math.isnan(x) for x in ind.rsi([1, 2, 3], 3))


def test_highest_lowest_rolling():
    values = [3, 1, 4, 1, 5, 9, 2, 6]
    nan_equal(ind.highest(values, 3), [math.nan, math.nan, 4, 4, 5, 9, 9, 9])
    nan_equal(ind.lowest(values, 3), [math.nan, math.nan, 1, 1, 1, 1, 2, 2])
    nan_equal(ind.highest(values, 1), values)


def test_atr_wilder_hand_computed():
    highs = [10, 12, 13, 12, 15]
    lows = [9, 10, 11, 9, 12]
    closes = [9.5, 11, 12.5, 10, 14]
    # true ranges: -, max(2, 2.5, 0.5)=2.5, max(2, 2, 0)=2, max(3, 0.5, 3.5)=3.5, max(3, 5, 2)=5
    nan_equal(ind.true_range(highs, lows, closes), [math.nan, 2.5, 2.0, 3.5, 5.0])
    # atr(2): idx 2 = (2.5+2)/2 = 2.25; idx 3 = (2.25+3.5)/2 = 2.875; idx 4 = (2.875+5)/2
    nan_equal(ind.atr(highs, lows, closes, 2), [math.nan, math.nan, 2.25, 2.875, 3.9375])


@pytest.mark.parametrize("fn", [ind.sma, ind.ema, ind.rsi, ind.highest, ind.lowest])
@pytest.mark.parametrize("period", [0, -3, 2.5, True])
def test_indicators_reject_bad_periods(fn, period):
    with pytest.raises(ValueError):
        fn([1.0, 2.0, 3.0], period)


def test_timeframe_and_bars_since():
    assert ind.timeframe_ms("5m") == 300_000
    assert ind.timeframe_ms("4h") == 14_400_000
    assert ind.timeframe_ms("1d") == 86_400_000
    assert ind.timeframe_ms("x") is None and ind.timeframe_ms("0m") is None
    stamps = [T0 + i * TF_MS for i in range(10)]
    assert ind.bars_since(stamps, "5m", T0 + 2 * TF_MS) == 7
    # older than the window: wall-clock bars, not just the ones in view
    assert ind.bars_since(stamps, "5m", T0 - 100 * TF_MS) == 109
    # an unreadable timeframe falls back to counting candles
    assert ind.bars_since(stamps, "weird", T0 + 2 * TF_MS) == 7
    assert ind.bars_since(stamps, "5m", stamps[-1]) == 0


# ====================================================================== series

FALLING = [100 - 0.5 * i for i in range(60)]  # 100 .. 70.5


def v_shape(down=60, up=40, step=0.5, start=100.0):
    series = [start - step * i for i in range(down)]
    bottom = series[-1]
    return series + [bottom + step * (i + 1) for i in range(up)]


# The strategies' warm-ups are long (their EMA/RSI equal the full-history values:
# docs/strategies.md, "Indicators"), so crafted shapes start after a flat lead-in of
# LEAD candles; the bar indexes of the shape are shifted by LEAD.
LEAD = 300


def lead(series, n=LEAD):
    return [series[0]] * n + list(series)


def rise_then_fall(up=80, down=40, step=0.5, start=100.0):
    series = [start + step * i for i in range(up)]
    top = series[-1]
    return series + [top - step * (i + 1) for i in range(down)]


# ====================================================================== ema_cross


def test_ema_cross_enters_on_the_cross_up_bar():
    candles = make_candles(lead(v_shape()))
    events = simulate(ema_cross, candles, {"fast": 3, "slow": 8})
    entries = actions(events, "enter")
    assert len(entries) == 1
    i = entries[0]
    # independent check: the fast EMA crosses the slow one on exactly that bar
    w = ema_cross.warmup(ema_cross.Params(fast=3, slow=8))
    window = [c.close for c in candles[i - w + 1 : i + 1]]
    fast, slow = ind.ema(window, 3), ind.ema(window, 8)
    assert fast[-2] <= slow[-2] and fast[-1] > slow[-1]
    assert i >= 60 + LEAD  # during the rise, not the fall
    state = events[[e[0] for e in events].index(i)][3]
    assert state == {"entry_ts": candles[i].ts, "bars_in_trade": 0}


def test_ema_cross_exits_on_a_falling_series_and_counts_bars():
    # a dip (so that there is a cross up to enter on), a rise, then a fall
    series = lead(v_shape(down=30, up=60))
    series += [series[-1] - 0.7 * (i + 1) for i in range(40)]
    candles = make_candles(series)
    events = simulate(ema_cross, candles, {"fast": 3, "slow": 8})
    entry, exit_ = actions(events, "enter"), actions(events, "exit")
    assert len(entry) == 1 and len(exit_) == 1 and exit_[0] > entry[0] >= 30 + LEAD
    assert exit_[0] >= 90 + LEAD  # during the fall
    reason = events[[e[0] for e in events].index(exit_[0])][2]
    assert reason.startswith("cross down")
    # the bar count in state grows by one per bar while in the trade
    held = [e[3]["bars_in_trade"] for e in events if entry[0] < e[0] <= exit_[0]]
    assert held == list(range(1, exit_[0] - entry[0] + 1))


def test_ema_cross_no_entry_when_entries_not_allowed_but_exit_still_happens():
    candles = make_candles(lead(v_shape()))
    events = simulate(ema_cross, candles, {"fast": 3, "slow": 8}, allowed=False)
    assert actions(events, "enter") == []
    assert any(r == "entries not allowed" for _, a, r, _ in events if a == "hold")

    down = make_candles(lead(rise_then_fall(up=60, down=30)))
    ctx = ctx_for(ema_cross, down, position=1.0, entry_price=120.0, allowed=False, fast=3, slow=8)
    d = ema_cross.evaluate(ctx)
    assert d.action == "exit" and d.reason.startswith("cross down")


def test_ema_cross_stop_loss_and_max_bars():
    rising = make_candles([100 + 0.5 * i for i in range(120)])  # fast above slow
    close = rising[-1].close
    base = dict(fast=3, slow=8)
    # no stop configured: hold
    d = ema_cross.evaluate(ctx_for(ema_cross, rising, position=1, entry_price=close * 1.5, **base))
    assert d.action == "hold"
    # close 33% under the entry, stop at 5%: exit even though the trend is up
    d = ema_cross.evaluate(
        ctx_for(ema_cross, rising, position=1, entry_price=close * 1.5, stop_loss_pct=0.05, **base)
    )
    assert d.action == "exit" and d.reason.startswith("stop-loss")
    # close above the stop: hold
    d = ema_cross.evaluate(
        ctx_for(ema_cross, rising, position=1, entry_price=close * 1.01, stop_loss_pct=0.05, **base)
    )
    assert d.action == "hold"
    # max bars: the entry bar from state is 10 bars back
    state = {"entry_ts": rising[-11].ts}
    d = ema_cross.evaluate(
        ctx_for(ema_cross, rising, position=1, entry_price=close, state=state, max_bars_held=10, **base)
    )
    assert d.action == "exit" and "max bars" in d.reason and d.state["bars_in_trade"] == 10
    d = ema_cross.evaluate(
        ctx_for(ema_cross, rising, position=1, entry_price=close, state=state, max_bars_held=11, **base)
    )
    assert d.action == "hold" and d.state == {"entry_ts": rising[-11].ts, "bars_in_trade": 10}


def test_ema_cross_enters_on_the_cross_not_on_the_trend():
    """A flat slot in an established up-trend (fast above slow for long) waits for
    the next cross instead of buying the middle of the move."""
    rising = make_candles([100 + 0.5 * i for i in range(120)])
    closes = [c.close for c in rising]
    assert ind.ema(closes, 3)[-2] > ind.ema(closes, 8)[-2]
    d = ema_cross.evaluate(ctx_for(ema_cross, rising, fast=3, slow=8))
    assert d.action == "hold" and d.reason.startswith("no cross up")


def test_ema_cross_position_without_state_starts_counting_now():
    rising = make_candles([100 + 0.5 * i for i in range(120)])
    d = ema_cross.evaluate(ctx_for(ema_cross, rising, position=1, entry_price=100.0, fast=3, slow=8))
    assert d.action == "hold" and d.state == {"entry_ts": rising[-1].ts, "bars_in_trade": 0}


# ====================================================================== rsi_reversion


def test_rsi_reversion_enters_when_oversold_and_exits_when_overbought():
    series = lead(v_shape(down=60, up=60, step=0.3))
    candles = make_candles(series)
    params = {"period": 5, "oversold": 25, "overbought": 75}
    events = simulate(rsi_reversion, candles, params)
    entries, exits = actions(events, "enter"), actions(events, "exit")
    assert len(entries) == 1 and len(exits) == 1
    assert entries[0] < 60 + LEAD <= exits[0]  # bought in the fall, sold in the rise
    w = rsi_reversion.warmup(rsi_reversion.Params(**params))
    closes = [c.close for c in candles]
    assert ind.rsi(closes[entries[0] - w + 1 : entries[0] + 1], 5)[-1] < 25
    assert ind.rsi(closes[exits[0] - w + 1 : exits[0] + 1], 5)[-1] > 75
    state = events[[e[0] for e in events].index(entries[0])][3]
    assert state["entry_ts"] == candles[entries[0]].ts


def test_rsi_reversion_respects_entries_allowed_but_still_exits():
    falling = make_candles([100 - 0.1 * i for i in range(300)])
    d = rsi_reversion.evaluate(ctx_for(rsi_reversion, falling, allowed=True))
    assert d.action == "enter"
    d = rsi_reversion.evaluate(ctx_for(rsi_reversion, falling, allowed=False))
    assert d.action == "hold" and d.state == {}
    rising = make_candles([50 + 0.5 * i for i in range(300)])
    d = rsi_reversion.evaluate(ctx_for(rsi_reversion, rising, position=2.0, entry_price=50, allowed=False))
    assert d.action == "exit" and d.reason.startswith("RSI")


def test_rsi_reversion_max_bars_uses_state():
    # an alternating series keeps the RSI near 50: neither signal
    flat = make_candles([100 + (0.5 if i % 2 else -0.5) for i in range(300)])
    value = ind.rsi([c.close for c in flat], 14)[-1]
    assert 30 < value < 70
    recent = {"entry_ts": flat[-3].ts}
    old = {"entry_ts": flat[-30].ts}
    d = rsi_reversion.evaluate(ctx_for(rsi_reversion, flat, position=1, entry_price=100, state=recent, max_bars_held=5))
    assert d.action == "hold" and d.state["bars_in_trade"] == 2
    d = rsi_reversion.evaluate(ctx_for(rsi_reversion, flat, position=1, entry_price=100, state=old, max_bars_held=5))
    assert d.action == "exit" and "max bars" in d.reason
    # the same old state without the limit holds: it was the state that made it exit
    d = rsi_reversion.evaluate(ctx_for(rsi_reversion, flat, position=1, entry_price=100, state=old))
    assert d.action == "hold" and d.state["bars_in_trade"] == 29


# ====================================================================== breakout


def test_breakout_enters_above_the_channel_and_trails_the_stop():
    # flat channel 99..101, then a breakout and a steady rise, then a fall
    flat = [100 + (1 if i % 2 else -1) for i in range(30)]
    rise = [102 + 2 * i for i in range(15)]  # 102 .. 130
    fall = [130 - 1.5 * (i + 1) for i in range(10)]
    closes = flat + rise + fall
    highs = [c + 0.5 for c in closes]
    candles = make_candles(closes, highs=highs)
    params = {"lookback": 10, "trail_pct": 0.05}
    events = simulate(breakout, candles, params)
    entries, exits = actions(events, "enter"), actions(events, "exit")
    assert entries == [30]  # 102 > 101.5, the highest high of the previous 10
    assert len(exits) == 1
    stops = [e[3]["stop"] for e in events if 30 <= e[0] <= exits[0]]
    assert stops == sorted(stops) and stops[-1] > stops[0]  # the stop only rises
    assert stops[-1] == pytest.approx(130 * 0.95)
    # exit on the first close at or below 123.5: 130 - 1.5*5 = 122.5 is bar 44 + 5
    assert exits[0] == 44 + 5
    assert candles[exits[0] - 1].close > 123.5 >= candles[exits[0]].close


def test_breakout_honours_the_stop_in_state():
    closes = [100 + 0.1 * i for i in range(30)]
    candles = make_candles(closes)
    close = candles[-1].close
    # without state: the stop restarts from max(entry, close): hold
    d = breakout.evaluate(ctx_for(breakout, candles, position=1, entry_price=close))
    assert d.action == "hold"
    assert d.state["stop"] == pytest.approx(close * 0.98) and d.state["highest_close"] == close
    # a stop in state above the close (ratcheted up earlier): exit
    d = breakout.evaluate(
        ctx_for(breakout, candles, position=1, entry_price=close,
                state={"highest_close": close * 1.1, "stop": close * 1.05})
    )
    assert d.action == "exit" and d.reason.startswith("trailing stop")
    # a stop in state never moves down, even when the highest close would allow it
    d = breakout.evaluate(
        ctx_for(breakout, candles, position=1, entry_price=close,
                state={"highest_close": close, "stop": close * 0.999}, trail_pct=0.1)
    )
    assert d.action == "hold" and d.state["stop"] == pytest.approx(close * 0.999)
    # the highest close in state (above today's close) sets the stop
    d = breakout.evaluate(
        ctx_for(breakout, candles, position=1, entry_price=close * 0.9,
                state={"highest_close": close * 1.1})
    )
    assert d.action == "exit" and d.state["stop"] == pytest.approx(close * 1.1 * 0.98)
    assert d.state["highest_close"] == pytest.approx(close * 1.1)
    # garbage in state is ignored, not trusted
    d = breakout.evaluate(
        ctx_for(breakout, candles, position=1, entry_price=close,
                state={"highest_close": "x", "stop": float("nan")})
    )
    assert d.action == "hold" and d.state["stop"] == pytest.approx(close * 0.98)


def test_breakout_exits_with_entries_not_allowed_and_does_not_enter():
    closes = [100.0] * 25 + [105.0]
    candles = make_candles(closes, highs=[c + 0.5 for c in closes])
    d = breakout.evaluate(ctx_for(breakout, candles))
    assert d.action == "enter" and d.state["stop"] == pytest.approx(105 * 0.98)
    d = breakout.evaluate(ctx_for(breakout, candles, allowed=False))
    assert d.action == "hold"
    d = breakout.evaluate(
        ctx_for(breakout, candles, position=1, entry_price=110, allowed=False,
                state={"highest_close": 110.0, "stop": 107.8})
    )
    assert d.action == "exit"


# ====================================================================== all strategies


@pytest.mark.parametrize("module", STRATEGIES, ids=lambda m: m.__name__)
def test_warming_up_holds(module):
    p = module.Params()
    w = module.warmup(p)
    assert isinstance(w, int) and w >= 2
    # A window shorter than the warm-up is all the history there is (docs/strategies.md,
    # "Indicators"): the strategy warms up until its indicator is defined on it.
    if module is ema_cross:
        w = p.slow + 1
    elif module is rsi_reversion:
        w = p.period + 1
    few = make_candles(FALLING[: w - 1] if w - 1 <= len(FALLING) else [100 - 0.01 * i for i in range(w - 1)])
    d = module.evaluate(ctx_for(module, few))
    assert d.action == "hold" and d.reason == "warming up"
    d = module.evaluate(ctx_for(module, ()))
    assert d.action == "hold" and d.reason == "warming up"
    d = module.evaluate(ctx_for(module, (), position=1.0, entry_price=100.0))
    assert d.action == "hold" and d.reason == "warming up"


@pytest.mark.parametrize("module", STRATEGIES, ids=lambda m: m.__name__)
def test_interface(module):
    assert module.STATE_SCHEMA == 1
    assert issubclass(module.Params, StrategyParams)
    p = module.Params()
    assert module.warmup(p) > 0
    assert callable(module.evaluate)


@pytest.mark.parametrize(
    "module,bad",
    [
        (ema_cross, {"fast": 26, "slow": 26}),
        (ema_cross, {"fast": 30, "slow": 20}),
        (ema_cross, {"fast": -5}),
        (ema_cross, {"slow": 0}),
        (ema_cross, {"stop_loss_pct": 5}),  # a fraction: 0.05 means 5%
        (ema_cross, {"stop_loss_pct": 0}),
        (ema_cross, {"fast": "twelve"}),
        (ema_cross, {"speed": 3}),
        (rsi_reversion, {"oversold": 70, "overbought": 30}),
        (rsi_reversion, {"oversold": 50, "overbought": 50}),
        (rsi_reversion, {"period": 1}),
        (rsi_reversion, {"overbought": 120}),
        (rsi_reversion, {"max_bars_held": 0}),
        (rsi_reversion, {"extra": True}),
        (breakout, {"lookback": -1}),
        (breakout, {"trail_pct": 0}),
        (breakout, {"trail_pct": 1.5}),
        (breakout, {"channel": 20}),
    ],
)
def test_params_validation_rejects(module, bad):
    with pytest.raises(ValidationError):
        module.Params(**bad)
    with pytest.raises(ValidationError):
        module.Params.model_validate(bad)


def test_params_accept_good_values_and_are_frozen():
    p = ema_cross.Params(fast=5, slow=20, stop_loss_pct=0.03)
    assert (p.fast, p.slow, p.stop_loss_pct) == (5, 20, 0.03)
    # slow 20: alpha 2/21, (19/21)**185 < 1e-8 < (19/21)**184; 20 seed + 185 + 1 previous bar
    assert ema_cross.warmup(p) == 206
    assert rsi_reversion.Params(oversold=20, overbought=80).oversold == 20
    assert breakout.warmup(breakout.Params(lookback=55)) == 56
    with pytest.raises(ValidationError):
        p.fast = 7


@pytest.mark.parametrize("module", STRATEGIES, ids=lambda m: m.__name__)
def test_params_from_a_mapping_or_another_generation(module):
    """The kernel may hand params as a plain mapping or as an instance of another
    generation's (equal but distinct) Params class: both are read as this module's."""
    twin_cls = create_model(
        "Params",
        __base__=StrategyParams,
        **{name: (f.annotation, f) for name, f in module.Params.model_fields.items()},
    )
    assert twin_cls is not module.Params
    window = make_candles(v_shape(down=80, up=3, step=0.3))

    def run(params):
        ctx = Context("s", "BTC/USDT", TF, 0, window, 0.0, None, params, MappingProxyType({}), True)
        return module.evaluate(ctx)

    expected = run(module.Params())
    assert expected.reason  # carries the numbers the params produced
    assert run(twin_cls()) == expected
    assert run({}) == expected
    assert run(None) == expected
    with pytest.raises(ValidationError):
        run({"no_such_param": 1})


@pytest.mark.parametrize("module", STRATEGIES, ids=lambda m: m.__name__)
def test_evaluate_is_pure(module):
    candles = make_candles(v_shape(down=80, up=80, step=0.3))
    ctx = ctx_for(module, candles, position=1.0, entry_price=90.0, state={"entry_ts": candles[-5].ts})
    first = module.evaluate(ctx)
    assert module.evaluate(ctx) == first
    assert dict(ctx.state) == {"entry_ts": candles[-5].ts}


# ====================================================================== module rules

ALLOWED_TOP = {"kernel", "numpy", "__future__"} | set(sys.stdlib_module_names)


@pytest.mark.parametrize("path", STRATEGY_FILES, ids=lambda p: p.name)
def test_module_imports_follow_the_rules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                assert top != "strategies", f"{path.name}:{node.lineno}: absolute import {alias.name}"
                assert top in ALLOWED_TOP, f"{path.name}:{node.lineno}: imports {alias.name}"
                if top == "kernel":
                    assert alias.name == "kernel.strategy_api"
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: a sibling of the same generation
                continue
            top = (node.module or "").split(".")[0]
            assert top != "strategies", f"{path.name}:{node.lineno}: from {node.module} import"
            assert top in ALLOWED_TOP, f"{path.name}:{node.lineno}: from {node.module} import"
            if top == "kernel":
                assert node.module == "kernel.strategy_api"


MUTABLE_NODES = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
IMMUTABLE_CALLS = {"frozenset", "tuple", "float", "int", "str", "bytes", "MappingProxyType"}


@pytest.mark.parametrize("path", STRATEGY_FILES, ids=lambda p: p.name)
def test_module_has_no_mutable_module_state(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            value = node.value
            if value is None:
                continue
            for sub in ast.walk(value):
                assert not isinstance(sub, MUTABLE_NODES), (
                    f"{path.name}:{node.lineno}: module-level {type(sub).__name__}"
                )
                if isinstance(sub, ast.Call):
                    name = getattr(sub.func, "id", getattr(sub.func, "attr", None))
                    assert name in IMMUTABLE_CALLS, f"{path.name}:{node.lineno}: module-level call {name}()"
        assert not isinstance(node, (ast.For, ast.While, ast.With, ast.Try)), (
            f"{path.name}:{node.lineno}: module-level {type(node).__name__}"
        )
    for node in ast.walk(tree):
        assert not isinstance(node, (ast.Global, ast.Nonlocal)), f"{path.name}:{node.lineno}: {type(node).__name__}"


def test_the_static_checks_can_fail(tmp_path):
    """The checks above would catch a bad module (they are not vacuous)."""
    bad = tmp_path / "bad.py"
    bad.write_text(BREAKS_THE_STATIC_RULES)
    with pytest.raises(AssertionError):
        test_module_imports_follow_the_rules(bad)
    with pytest.raises(AssertionError):
        test_module_has_no_mutable_module_state(bad)


def test_strategies_load_as_their_own_generation():
    """Loaded under a synthetic package name (as the kernel does), each module's
    relative imports resolve inside that generation, not to ``strategies``."""
    name = "_foresight_gen_test_1"
    spec = importlib.util.spec_from_file_location(
        name, STRATEGY_DIR / "__init__.py", submodule_search_locations=[str(STRATEGY_DIR)]
    )
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[name] = pkg
    try:
        spec.loader.exec_module(pkg)
        for mod_name in ("ema_cross", "rsi_reversion", "breakout"):
            mod = importlib.import_module(f"{name}.{mod_name}")
            assert mod is not importlib.import_module(f"strategies.{mod_name}")
            assert mod.Params().model_dump() == importlib.import_module(f"strategies.{mod_name}").Params().model_dump()
        gen_ind = sys.modules[f"{name}.indicators"]
        assert gen_ind is not ind
        assert sys.modules[f"{name}.ema_cross"].ema is gen_ind.ema
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


# ====================================================================== on the synthetic feed


@pytest.mark.parametrize("module", STRATEGIES, ids=lambda m: m.__name__)
def test_trades_on_two_days_of_synthetic_btc(module):
    from kernel.feeds.synthetic import SyntheticFeed

    feed = SyntheticFeed(7)
    w = module.warmup(module.Params())
    bars = 2 * 24 * 12  # two days of 5m candles
    candles = feed.candles("BTC/USDT", TF, T0 + 2 * 86_400_000, bars + w)
    assert len(candles) == bars + w
    events = simulate(module, candles)
    assert len(actions(events, "enter")) >= 1
    assert len(actions(events, "exit")) >= 1
    # a paused stretch: no entries in it, exits still possible
    events = simulate(module, candles, allowed=lambda i: i % 2 == 0)
    assert all(i % 2 == 0 for i in actions(events, "enter"))
