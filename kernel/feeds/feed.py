"""The feed protocol and what every feed shares: timeframe arithmetic, FeedError.

Its own module so that the implementations (synthetic, replay, ccxt) import it without
importing the package that re-exports them (no cycle). The package docstring says what a
feed answers.
"""
from __future__ import annotations

import operator
from typing import Protocol, runtime_checkable

from kernel.protocol import TIMEFRAMES
from kernel.strategy_api import Candle


class FeedError(Exception):
    """A feed cannot answer: unknown timeframe, missing or malformed data, ..."""


@runtime_checkable
class Feed(Protocol):
    def candles(self, symbol: str, timeframe: str, end_close_ms: int, limit: int) -> list[Candle]:
        """Up to ``limit`` closed candles, oldest first, the last closing at or before
        ``end_close_ms``."""
        ...

    def last_price(self, symbol: str, at_ms: int) -> float:
        """The price known at ``at_ms``."""
        ...


def timeframe_ms(timeframe: str) -> int:
    """Length of a timeframe of :data:`kernel.protocol.TIMEFRAMES` in ms."""
    try:
        return TIMEFRAMES[timeframe] * 1000
    except (KeyError, TypeError):
        raise FeedError(
            f"unknown timeframe {timeframe!r}; expected one of {', '.join(TIMEFRAMES)}"
        ) from None


def last_closed_open_ms(end_close_ms: int, tf_ms: int) -> int:
    """Open time of the most recent candle of length ``tf_ms`` that has closed at
    ``end_close_ms`` (its close ``ts + tf_ms`` is ``<= end_close_ms``)."""
    return (int(end_close_ms) // tf_ms) * tf_ms - tf_ms


def _as_limit(limit: object) -> int:
    """``limit`` as an int (numpy integers welcome); FeedError for anything else."""
    if isinstance(limit, bool):
        raise FeedError(f"limit must be an integer, not {limit!r}")
    try:
        return operator.index(limit)  # type: ignore[arg-type]
    except TypeError:
        raise FeedError(f"limit must be an integer, not {limit!r}") from None
