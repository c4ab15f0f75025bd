"""The version tests' strategies folder (conftest.py's ``folder``: ``alpha`` and its relatively
imported ``helper``, tests/support/alpha_sources.py): rewriting one of its files, and running a
version loaded from it (a Context, a smoke sample, the reason its evaluate gives)."""
from __future__ import annotations

import textwrap
from pathlib import Path

from kernel.strategy_api import Candle, Context
from kernel.versions.checks import SmokeSample


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def ctx(**kw) -> Context:
    candles = tuple(Candle(1_700_000_000_000 + i * 300_000, 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(5))
    base = dict(slot="s1", symbol="BTC/USDT", timeframe="5m", now_ms=candles[-1].ts, candles=candles,
                position=0.0, entry_price=None, params=None)
    base.update(kw)
    return Context(**base)


def reason_of(version) -> str:
    return version.evaluate(ctx(params=version.params({}))).reason


def sample(slot: str = "s1", params: dict | None = None) -> SmokeSample:
    candles = tuple(Candle(1_700_000_000_000 + i * 300_000, 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(5))
    return SmokeSample(slot=slot, symbol="BTC/USDT", timeframe="5m", params=params or {}, candles=candles,
                       position=0.0, entry_price=None)
