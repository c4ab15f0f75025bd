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
Concurrent identical requests wait for one fetch. Requests go through the kernel's
:class:`~kernel.exchange_client.ExchangeClient` and, given ``fetch_clients`` (its
``public_clones``: one exchange instance each, one shared rate limiter), through those
too: the series of one close, asked by the cycles' workers at once, are fetched
concurrently, ``1 + len(fetch_clients)`` at a time, within the exchange's rate limit.

Given a ``cache_dir`` (the kernel's: ``<state dir>/ccxt-cache/<exchange>``), each
series' cache and the exchange's markets are kept there (atomic replacement; a file that
does not read back whole is ignored), so a restart fetches only the candles closed since,
and loads markets again only when the saved ones are older than ``markets_max_age_s``.
"""
from __future__ import annotations

import bisect
import json
import logging
import math
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from kernel.errors import KernelError
from kernel.exchange_client import ExchangeClient
from kernel.feeds.feed import FeedError, last_closed_open_ms, timeframe_ms
from kernel.strategy_api import Candle

__all__ = ["CcxtFeed"]

PAGE = 500  # candles per request: every exchange we know serves at least this many
CACHE_VERSION = 1
MAX_CACHE_FILE = 64 * 1024 * 1024  # bytes: a bigger file is not ours

log = logging.getLogger("kernel.feeds.ccxt")


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
        fetch_clients: Sequence[ExchangeClient] = (),
        cache_dir: Path | None = None,
        markets_max_age_s: float = 86_400.0,
    ) -> None:
        self.client = client
        self._io: queue.Queue[ExchangeClient] = queue.Queue()
        for c in (client, *fetch_clients):
            self._io.put(c)
        self._clones = tuple(fetch_clients)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.markets_max_age_s = float(markets_max_age_s)
        self._markets_ready = False
        self._markets_lock = threading.Lock()
        self.markets_source: str | None = None  # "saved" or "exchange", once known
        self.cache_writes = 0
        # Series to save, written by one writer thread off the cycles' path (latest snapshot wins).
        self._dirty: dict[tuple[str, str], tuple[int, int, list[Candle]]] = {}
        self._dirty_cv = threading.Condition()
        self._writing = False
        self._writer: threading.Thread | None = None
        self._restore_markets()  # before anyone (the broker's reconciliation) asks the exchange
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
                    "candles": sum(len(s.ts) for s in self._series.values()),
                    "io_clients": 1 + len(self._clones), "cache_writes": self.cache_writes}

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
                series = self._series[key] = self._load_series(symbol, timeframe) or _Series()
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
        self._ensure_markets()
        while cursor <= last_open:
            n = min(PAGE, (last_open - cursor) // tf + 1)
            with self._io_client() as io:
                rows = io.call("fetch_ohlcv", symbol, timeframe, cursor, n)
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
        if got:
            self._save_series(symbol, timeframe, s)

    # -- I/O clients, markets and the cache in the state dir -----------------------

    @contextmanager
    def _io_client(self) -> Iterator[ExchangeClient]:
        """One exchange instance to myself for one request (the others may be in use by
        other workers: their requests run concurrently, paced by the shared limiter)."""
        io = self._io.get()
        try:
            yield io
        finally:
            self._io.put(io)

    def _restore_markets(self) -> None:
        """The saved markets, when fresh, on every instance: no request to load them."""
        saved = self._read_json("markets.json")
        if not (isinstance(saved, dict) and saved.get("v") == CACHE_VERSION and saved.get("exchange") == self.client.id
                and saved.get("sandbox") == bool(self.client.sandbox)
                and isinstance(saved.get("markets"), dict) and saved["markets"]):
            return
        age_s = time.time() - float(saved.get("saved_s", 0))
        if not 0 <= age_s < self.markets_max_age_s:
            return
        try:
            for c in (self.client, *self._clones):
                c.use_markets(saved["markets"])
        except Exception as exc:  # noqa: BLE001 - a saved file ccxt cannot read: load them again
            log.warning("saved markets of %s unusable (%s): they will be loaded", self.client.id, exc)
            return
        self.markets_source = "saved"
        log.info("markets of %s from the state dir (saved %.0f s ago)", self.client.id, age_s)

    def _ensure_markets(self) -> None:
        """Markets on every instance before the first request: the restored ones, those the
        main client has loaded already (the broker's), or loaded once now; saved when they
        came from the exchange. A failure is retried at the next fetch."""
        if self._markets_ready:
            return
        with self._markets_lock:
            if self._markets_ready:
                return
            if self.markets_source != "saved":
                markets = self.client.exchange.markets or self.client.call("load_markets")
                for c in self._clones:
                    c.use_markets(markets)
                self.markets_source = "exchange"
                self._write_json("markets.json", {"v": CACHE_VERSION, "exchange": self.client.id,
                                                  "sandbox": bool(self.client.sandbox), "saved_s": time.time(),
                                                  "markets": markets})
            self._markets_ready = True

    def _series_file(self, symbol: str, timeframe: str) -> str:
        safe = "".join(ch if ch.isalnum() else "_" for ch in symbol)
        return f"candles-{safe}-{timeframe}.json"

    def _load_series(self, symbol: str, timeframe: str) -> _Series | None:
        data = self._read_json(self._series_file(symbol, timeframe))
        if data is None:
            return None
        try:
            tf = timeframe_ms(timeframe)
            if (data["v"], data["exchange"], data["symbol"], data["timeframe"]) != (
                    CACHE_VERSION, self.client.id, symbol, timeframe):
                raise ValueError("another series")
            candles = [Candle(int(r[0]), *(float(x) for x in r[1:6])) for r in data["candles"]]
            ts = [c.ts for c in candles]
            lo, hi = int(data["covered_from"]), int(data["covered_to"])
            if (any(t % tf for t in ts) or any(b <= a for a, b in zip(ts, ts[1:])) or lo % tf or hi % tf
                    or (ts and (ts[0] < lo or ts[-1] > hi))
                    or not all(math.isfinite(x) for c in candles for x in (c.open, c.high, c.low, c.close))):
                raise ValueError("inconsistent")
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            log.warning("ccxt cache of %s %s ignored: %s", symbol, timeframe, exc)
            return None
        return _Series(ts=ts, candles=candles, covered_from=lo, covered_to=hi)

    def _save_series(self, symbol: str, timeframe: str, s: _Series) -> None:
        """Queue the series for the writer thread (its lists are replaced, never mutated, so
        the references are a consistent snapshot)."""
        if self.cache_dir is None or s.covered_from is None or s.covered_to is None:
            return
        with self._dirty_cv:
            self._dirty[(symbol, timeframe)] = (s.covered_from, s.covered_to, s.candles)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="ccxt-cache-writer", daemon=True)
                self._writer.start()
            self._dirty_cv.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self._dirty_cv:
                while not self._dirty:
                    self._dirty_cv.wait()
                batch, self._dirty = self._dirty, {}
                self._writing = True
            try:
                for (symbol, timeframe), (lo, hi, candles) in batch.items():
                    self._write_json(self._series_file(symbol, timeframe), {
                        "v": CACHE_VERSION, "exchange": self.client.id, "symbol": symbol, "timeframe": timeframe,
                        "covered_from": lo, "covered_to": hi,
                        "candles": [[c.ts, c.open, c.high, c.low, c.close, c.volume] for c in candles]})
            finally:
                with self._dirty_cv:
                    self._writing = False
                    self._dirty_cv.notify_all()

    def flush_cache(self, timeout: float = 10.0) -> bool:
        """Wait until every queued series is written; False if that took over ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._dirty_cv:
            while self._dirty or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._dirty_cv.wait(left)
        return True

    def _read_json(self, name: str) -> Any:
        if self.cache_dir is None:
            return None
        from kernel.safe_files import read_regular

        try:
            raw, _ = read_regular(self.cache_dir / name, limit=MAX_CACHE_FILE)
            if len(raw) > MAX_CACHE_FILE:
                raise ValueError("too large")
            return json.loads(raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # torn, foreign, a symlink: not used, replaced at the next write
            log.warning("ccxt cache file %s ignored: %s", self.cache_dir / name, exc)
            return None

    def _write_json(self, name: str, data: Any) -> None:
        """Replace the file atomically (no fsync: a cache; a file torn by a power cut does not
        read back and is ignored). A failure to write costs only a fetch after a restart."""
        if self.cache_dir is None:
            return
        from kernel.safe_files import atomic_write_bytes

        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.cache_dir / name, json.dumps(data, separators=(",", ":")).encode(), fsync=False)
            with self._lock:
                self.cache_writes += 1
        except (OSError, TypeError, ValueError) as exc:
            log.warning("ccxt cache file %s not written: %s", self.cache_dir / name, exc)
