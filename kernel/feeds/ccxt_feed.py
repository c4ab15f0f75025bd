"""Closed candles from a real exchange, through ccxt's ``fetch_ohlcv``.

:class:`CcxtFeed` has the semantics of :class:`kernel.feeds.Feed`, with the exchange
as the judge of time:

- a candle is served only once its close time has passed *by the exchange's clock*
  (the local clock plus an offset measured with ``fetch_time``, refreshed every few
  minutes), plus ``close_grace_ms``; exchanges also return the forming candle, and
  that one is dropped, never cached, never evaluated;
- a cycle that asks at a close the exchange has not reached yet (clocks drift, the
  scheduler is punctual) waits for it up to ``max_wait_ms``; past that it gets the
  candles closed so far: a late candle is missing, and so is a candle the exchange
  never had. Nothing is invented to fill a gap;
- a candle that was not there at one fetch (published late) is asked for again at the
  next request, at most once per ``refetch_ms``.

A small cache per (symbol, timeframe) keeps the candles fetched so far and the range
they cover, so the 16 slots of 8 symbols cost one request per (symbol, timeframe) and
candle close, and a new close fetches only the candles after the cached ones.
Concurrent identical requests wait for one fetch. All requests go through the kernel's
:class:`~kernel.exchange_client.ExchangeClient` (one lock, ccxt's rate limiter).
"""
from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from kernel.errors import KernelError
from kernel.exchange_client import ExchangeClient
from kernel.feeds.feed import FeedError, last_closed_open_ms, timeframe_ms
from kernel.strategy_api import Candle

__all__ = ["CcxtFeed"]

PAGE = 500  # candles per request: every exchange we know serves at least this many


@dataclass
class _Series:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ts: list[int] = field(default_factory=list)
    candles: list[Candle] = field(default_factory=list)
    covered_from: int | None = None  # open times [covered_from, covered_to] have been asked for
    covered_to: int | None = None  # ... and every candle the exchange had there is in ts/candles
    last_try: tuple[int, float] | None = None  # (last open asked for, monotonic s) of the last fetch


class CcxtFeed:
    def __init__(
        self,
        client: ExchangeClient,
        *,
        close_grace_ms: int = 500,
        max_wait_ms: int = 3_000,
        refetch_ms: int = 1_000,
        cache_candles: int = 2_000,
        time_sync_s: float = 300.0,
        wall_ms: Callable[[], int] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.close_grace_ms = int(close_grace_ms)
        self.max_wait_ms = int(max_wait_ms)
        self.refetch_ms = int(refetch_ms)
        self.cache_candles = int(cache_candles)
        self.time_sync_s = float(time_sync_s)
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self._sleep = sleep
        self._monotonic = monotonic
        self._series: dict[tuple[str, str], _Series] = {}
        self._lock = threading.Lock()
        self._offset_ms = 0
        self._synced_at: float | None = None
        self._sync_lock = threading.Lock()
        self.fetches = 0  # fetch_ohlcv requests made

    def __repr__(self) -> str:
        return f"CcxtFeed({self.client!r})"

    # -- the exchange's clock -------------------------------------------------

    def exchange_now_ms(self) -> int:
        """Now by the exchange's clock (local clock + the last measured offset)."""
        self._maybe_sync()
        return self._wall_ms() + self._offset_ms

    def _maybe_sync(self) -> None:
        if not self.client.has("fetchTime"):
            return
        now = self._monotonic()
        if self._synced_at is not None and now - self._synced_at < self.time_sync_s:
            return
        with self._sync_lock:
            if self._synced_at is not None and self._monotonic() - self._synced_at < self.time_sync_s:
                return
            t0 = self._wall_ms()
            try:
                server = self.client.call("fetch_time", budget_s=2.0)
            except KernelError:
                self._synced_at = self._monotonic() - self.time_sync_s + 10  # try again in 10 s
                return
            t1 = self._wall_ms()
            if server:
                self._offset_ms = int(server) - (t0 + t1) // 2
            self._synced_at = self._monotonic()

    # -- the Feed interface ---------------------------------------------------

    def candles(self, symbol: str, timeframe: str, end_close_ms: int, limit: int) -> list[Candle]:
        tf = timeframe_ms(timeframe)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise FeedError(f"limit must be an integer, not {limit!r}")
        if limit <= 0:
            return []
        last_open = last_closed_open_ms(end_close_ms, tf)
        # Has the exchange closed that candle? Wait a little for it, or serve what is closed.
        closed_open = self._last_closed_open(tf)
        if closed_open < last_open:
            wait_ms = (last_open + tf + self.close_grace_ms) - self.exchange_now_ms()
            if 0 < wait_ms <= self.max_wait_ms:
                self._sleep(wait_ms / 1000.0)
                closed_open = self._last_closed_open(tf)
            last_open = min(last_open, closed_open)
        first_open = last_open - (limit - 1) * tf
        series = self._series_for(symbol, timeframe)
        with series.lock:  # one fetch per (symbol, timeframe) at a time; the others wait and reuse it
            if not self._covers(series, first_open, last_open):
                self._fetch(series, symbol, timeframe, tf, first_open, last_open)
            lo = bisect.bisect_left(series.ts, first_open)
            hi = bisect.bisect_right(series.ts, last_open)
            return series.candles[lo:hi]

    def last_price(self, symbol: str, at_ms: int) -> float:
        window = self.candles(symbol, "1m", int(at_ms), 1)
        if not window:
            raise FeedError(f"no 1m candle of {symbol} closed at or before {at_ms} on {self.client.id}")
        return window[-1].close

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"series": len(self._series), "fetches": self.fetches,
                    "candles": sum(len(s.ts) for s in self._series.values())}

    def clear_cache(self) -> None:
        with self._lock:
            self._series.clear()

    # -- internals ------------------------------------------------------------

    def _last_closed_open(self, tf: int) -> int:
        """Open time of the latest candle closed (with the grace) by the exchange's clock."""
        return last_closed_open_ms(self.exchange_now_ms() - self.close_grace_ms, tf)

    def _series_for(self, symbol: str, timeframe: str) -> _Series:
        key = (symbol, timeframe)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series()
            return series

    def _covers(self, s: _Series, first_open: int, last_open: int) -> bool:
        if s.covered_from is None or s.covered_to is None or s.covered_from > first_open:
            return False
        if s.covered_to >= last_open:
            return True
        # The newest candle was missing last time: ask again, but not on every call.
        if s.last_try is not None and s.last_try[0] >= last_open:
            return (self._monotonic() - s.last_try[1]) * 1000 < self.refetch_ms
        return False

    def _fetch(self, s: _Series, symbol: str, timeframe: str, tf: int, first_open: int, last_open: int) -> None:
        if s.covered_from is not None and s.covered_to is not None and s.covered_from <= first_open <= s.covered_to + tf:
            since = s.covered_to + tf  # only what is newer than the cache
            covered_from = s.covered_from
        else:
            since = first_open
            covered_from = first_open
            s.ts, s.candles = [], []
        newest_closed = self._last_closed_open(tf)
        got: dict[int, Candle] = {}
        cursor = since
        while cursor <= last_open:
            n = min(PAGE, (last_open - cursor) // tf + 1)
            rows = self.client.call("fetch_ohlcv", symbol, timeframe, cursor, n)
            with self._lock:
                self.fetches += 1
            page_last = None
            for row in rows or ():
                try:
                    ts = int(row[0])
                    c = Candle(ts, float(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5] or 0.0))
                except (TypeError, ValueError, IndexError):
                    continue  # a malformed row is a missing candle, never a guessed one
                if ts % tf or ts < cursor or ts > min(last_open, newest_closed):
                    continue  # misaligned, outside the window, or still forming
                got[ts] = c
                page_last = ts if page_last is None else max(page_last, ts)
            if page_last is None or len(rows or ()) < n:
                break
            cursor = page_last + tf
        if got:
            merged = dict(zip(s.ts, s.candles))
            merged.update(got)
            ts_sorted = sorted(merged)
            keep = max(self.cache_candles, (last_open - first_open) // tf + 1)
            ts_sorted = ts_sorted[-keep:]
            s.ts = ts_sorted
            s.candles = [merged[t] for t in ts_sorted]
            if ts_sorted[0] > covered_from and len(merged) > keep:
                covered_from = ts_sorted[0]
        s.covered_from = covered_from
        # Covered up to the newest candle the exchange had: a later one may still be published.
        newest = max(got) if got else None
        if newest is not None:
            s.covered_to = max(newest, s.covered_to or newest)
        elif s.covered_to is None or s.covered_to < since - tf:
            s.covered_to = since - tf
        s.last_try = (last_open, self._monotonic())
