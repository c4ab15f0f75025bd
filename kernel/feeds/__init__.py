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

from typing import TYPE_CHECKING, Any

from kernel.feeds.feed import TIMEFRAMES, Candle, Feed, FeedError, last_closed_open_ms, timeframe_ms

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


def __getattr__(name: str) -> Any:  # lazy, so that importing the protocol stays cheap
    if name == "SyntheticFeed":
        from kernel.feeds.synthetic import SyntheticFeed

        return SyntheticFeed
    if name == "ReplayFeed":
        from kernel.feeds.replay import ReplayFeed

        return ReplayFeed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
