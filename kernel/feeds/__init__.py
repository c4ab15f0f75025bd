"""Candle feeds: where a cycle's candles and a fill's last price come from.

A feed answers two questions, for any symbol and any time, from any thread:

- ``candles(symbol, timeframe, end_close_ms, limit)``: up to ``limit`` CLOSED
  candles, oldest first. The last one is the most recent candle closed at
  ``end_close_ms``: the one whose close time (``ts + timeframe``) is
  ``<= end_close_ms``. With ``end_close_ms`` exactly on a boundary, the candle that
  closes at that boundary is included; a forming candle never is. Candles are
  aligned to the epoch (``ts % timeframe == 0``).
- ``last_price(symbol, at_ms)``: the price known at ``at_ms``.

Implementations: :class:`~kernel.feeds.synthetic.SyntheticFeed` (a seeded price
path, no data needed) and :class:`~kernel.feeds.replay.ReplayFeed` (CSV files).
Both are importable from here (``from kernel.feeds import SyntheticFeed``).
Plain Python: nothing here imports Django.
"""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kernel.protocol import TIMEFRAMES
from kernel.strategy_api import Candle

if TYPE_CHECKING:  # pragma: no cover
    from kernel.feeds.replay import ReplayFeed
    from kernel.feeds.synthetic import SyntheticFeed

__all__ = [
    "Candle",
    "Feed",
    "FeedError",
    "ReplayFeed",
    "SyntheticFeed",
    "TIMEFRAMES",
    "last_closed_open_ms",
    "timeframe_ms",
]


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


def __getattr__(name: str) -> Any:  # lazy, so that importing the protocol stays cheap
    if name == "SyntheticFeed":
        from kernel.feeds.synthetic import SyntheticFeed

        return SyntheticFeed
    if name == "ReplayFeed":
        from kernel.feeds.replay import ReplayFeed

        return ReplayFeed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
