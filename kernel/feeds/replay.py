"""Candles replayed from CSV files.

One file per (symbol, timeframe), named like ``BTC-USDT_5m.csv`` (the ``/`` of the
symbol becomes ``-``), with the columns ``ts,open,high,low,close,volume``: ``ts`` is
the candle's open time in ms since the epoch, aligned to the timeframe, strictly
increasing. A header line is optional. A gap in a file is simply missing candles:
nothing is invented to fill it.

:class:`ReplayFeed` has the semantics of :class:`kernel.feeds.Feed`: closed candles
only, none closing after ``end_close_ms``. ``data_end_ms`` is the close of a file's last
candle: where its replay data ends. ``last_price`` is the close of the latest
candle closed at or before ``at_ms``, over all the timeframes on file for the
symbol (the finest wins a tie). Files are read once, on first use, and checked
whole: a missing file, a malformed row (file and line are named), misaligned or
unsorted timestamps raise :class:`kernel.feeds.FeedError`.

:func:`write_csv` writes candles in that format (atomically); :func:`export_synthetic`
writes synthetic candles for demos and tests.
"""
from __future__ import annotations

import bisect
import csv
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from kernel.control import atomic_write_text
from kernel.feeds.feed import FeedError, _as_limit, TIMEFRAMES, last_closed_open_ms, timeframe_ms
from kernel.strategy_api import Candle

__all__ = ["ReplayFeed", "csv_name", "parse_csv_name", "read_csv", "write_csv", "export_synthetic"]

COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def csv_name(symbol: str, timeframe: str) -> str:
    """``("BTC/USDT", "5m")`` -> ``"BTC-USDT_5m.csv"``."""
    timeframe_ms(timeframe)
    if (
        not isinstance(symbol, str)
        or not symbol.strip("/")
        or symbol.count("/") > 1
        or any(ch in symbol for ch in "_-\\:*?\"<>|")
        or symbol.startswith(".")
    ):
        raise FeedError(f"symbol {symbol!r} cannot be named as a replay file")
    return f"{symbol.replace('/', '-')}_{timeframe}.csv"


def parse_csv_name(name: str) -> tuple[str, str]:
    """``"BTC-USDT_5m.csv"`` -> ``("BTC/USDT", "5m")``; FeedError if it is not such a name."""
    stem, dot, ext = name.rpartition(".")
    sym, underscore, tf = stem.rpartition("_")
    if not dot or ext.lower() != "csv" or not underscore or not sym or tf not in TIMEFRAMES:
        raise FeedError(
            f"{name!r} is not a replay file name like BTC-USDT_5m.csv "
            f"(timeframe one of {', '.join(TIMEFRAMES)})"
        )
    return sym.replace("-", "/", 1), tf


# --------------------------------------------------------------------- reading


def _finite(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FeedError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise FeedError(f"{where}: {column} {text!r} is not a finite number")
    return value


def read_csv(path: str | os.PathLike[str], timeframe: str | None = None) -> list[Candle]:
    """Read and check one candle file. With ``timeframe``, timestamps must be aligned
    to it. Raises FeedError naming the file (and the line) for anything wrong."""
    path = Path(path)
    tf = timeframe_ms(timeframe) if timeframe is not None else None
    out: list[Candle] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            prev_ts: int | None = None
            seen_data = False
            for row in reader:
                line = reader.line_num
                where = f"{path}:{line}"
                fields = [f.strip() for f in row]
                if not fields or all(not f for f in fields):
                    continue  # blank line
                if not seen_data and not fields[0].lstrip("+-").isdigit():  # a header line
                    if tuple(f.lower() for f in fields) != COLUMNS:
                        raise FeedError(
                            f"{where}: header {','.join(fields)!r}, expected {','.join(COLUMNS)!r}"
                        )
                    seen_data = True  # only one header, on the first line
                    continue
                seen_data = True
                if len(fields) != len(COLUMNS):
                    raise FeedError(
                        f"{where}: expected {len(COLUMNS)} columns ({','.join(COLUMNS)}), "
                        f"got {len(fields)}"
                    )
                try:
                    ts = int(fields[0])
                except ValueError:
                    raise FeedError(
                        f"{where}: ts {fields[0]!r} is not an integer (open time in ms)"
                    ) from None
                o, h, lo, c, v = (
                    _finite(text, col, where) for text, col in zip(fields[1:], COLUMNS[1:])
                )
                if min(o, h, lo, c) <= 0:
                    raise FeedError(f"{where}: prices must be positive")
                if v < 0:
                    raise FeedError(f"{where}: volume must not be negative")
                if h < max(o, c, lo) or lo > min(o, c):
                    raise FeedError(
                        f"{where}: inconsistent candle (high {h!r}, low {lo!r}, "
                        f"open {o!r}, close {c!r})"
                    )
                if tf is not None and ts % tf:
                    raise FeedError(f"{where}: ts {ts} is not aligned to {timeframe}")
                if prev_ts is not None and ts <= prev_ts:
                    what = "duplicate" if ts == prev_ts else "unsorted"
                    raise FeedError(
                        f"{where}: {what} timestamp {ts} after {prev_ts} "
                        "(timestamps must be strictly increasing)"
                    )
                prev_ts = ts
                out.append(Candle(ts, o, h, lo, c, v))
    except FileNotFoundError:
        raise FeedError(f"replay file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FeedError(f"cannot read replay file {path}: {exc}") from None
    return out


@dataclass(frozen=True, slots=True)
class _Series:
    path: Path
    tf_ms: int
    ts: tuple[int, ...]
    candles: tuple[Candle, ...]


class ReplayFeed:
    """Closed candles from CSV files in a folder (or from one file).

    ``path_or_dir``: a folder of ``<BASE>-<QUOTE>_<timeframe>.csv`` files, or one such
    file, in which case only its symbol and timeframe are served. Thread-safe.
    """

    def __init__(self, path_or_dir: str | os.PathLike[str]) -> None:
        path = Path(path_or_dir)
        self._only: tuple[str, str] | None = None
        if path.is_dir():
            self.folder = path
        elif path.is_file():
            self._only = parse_csv_name(path.name)
            self.folder = path.parent
        else:
            raise FeedError(f"replay path {path} does not exist")
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self._available: list[tuple[str, str]] | None = None

    def __repr__(self) -> str:
        return f"ReplayFeed({str(self.folder)!r})"

    def available(self) -> list[tuple[str, str]]:
        """(symbol, timeframe) pairs on file, sorted (listed once, until clear_cache)."""
        if self._only is not None:
            return [self._only]
        found = self._available
        if found is None:
            found = []
            for entry in self.folder.glob("*.csv"):
                try:
                    found.append(parse_csv_name(entry.name))
                except FeedError:
                    continue
            found.sort(key=lambda p: (p[0], TIMEFRAMES[p[1]]))
            self._available = found
        return list(found)

    def _load(self, symbol: str, timeframe: str) -> _Series:
        key = (symbol, timeframe)
        series = self._series.get(key)
        if series is not None:
            return series
        tf = timeframe_ms(timeframe)
        if self._only is not None and key != self._only:
            raise FeedError(
                f"this replay feed serves only {self._only[0]} {self._only[1]}, "
                f"not {symbol} {timeframe}"
            )
        path = self.folder / csv_name(symbol, timeframe)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                candles = read_csv(path, timeframe)
                series = _Series(path, tf, tuple(c.ts for c in candles), tuple(candles))
                self._series[key] = series
        return series

    def candles(self, symbol: str, timeframe: str, end_close_ms: int, limit: int) -> list[Candle]:
        series = self._load(symbol, timeframe)
        limit = _as_limit(limit)
        if limit <= 0:
            return []
        last_open = last_closed_open_ms(end_close_ms, series.tf_ms)
        stop = bisect.bisect_right(series.ts, last_open)
        return list(series.candles[max(0, stop - limit) : stop])

    def data_end_ms(self, symbol: str, timeframe: str) -> int | None:
        """The close of the last candle on file for ``symbol`` ``timeframe`` (None: an empty
        file). After it the file has no more data: a cycle for a later close has no candle,
        and never will (kernel/cycles.py stops the slot)."""
        series = self._load(symbol, timeframe)
        return series.ts[-1] + series.tf_ms if series.ts else None

    def last_price(self, symbol: str, at_ms: int) -> float:
        timeframes = [tf for sym, tf in self.available() if sym == symbol]
        if not timeframes:
            raise FeedError(f"no replay file for {symbol} in {self.folder}")
        best: tuple[int, int, float] | None = None  # (close time, -tf, close)
        for timeframe in timeframes:
            series = self._load(symbol, timeframe)
            stop = bisect.bisect_right(series.ts, int(at_ms) - series.tf_ms)
            if stop:
                c = series.candles[stop - 1]
                candidate = (c.ts + series.tf_ms, -series.tf_ms, c.close)
                if best is None or candidate[:2] > best[:2]:
                    best = candidate
        if best is None:
            raise FeedError(f"no candle of {symbol} closed at or before {at_ms} in {self.folder}")
        return best[2]

    def clear_cache(self) -> None:
        """Forget the files read so far (they are read again on next use)."""
        with self._lock:
            self._series.clear()
            self._available = None


# --------------------------------------------------------------------- writing


def write_csv(path: str | os.PathLike[str], candles: Iterable[Candle]) -> Path:
    """Write candles (strictly increasing ``ts``) with a header, atomically: a temp
    file in the same folder, fsync, rename. Floats are written with ``repr``, so a
    round trip through :func:`read_csv` gives equal candles."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(COLUMNS)]
    prev: int | None = None
    for c in candles:
        if prev is not None and c.ts <= prev:
            raise FeedError(f"candles must have strictly increasing ts ({c.ts} after {prev})")
        prev = c.ts
        lines.append(
            f"{int(c.ts)},{float(c.open)!r},{float(c.high)!r},{float(c.low)!r},"
            f"{float(c.close)!r},{float(c.volume)!r}"
        )
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def export_synthetic(
    folder: str | os.PathLike[str],
    symbols: Sequence[str],
    timeframes: Sequence[str],
    start_ms: int,
    end_close_ms: int,
    seed: int = 7,
    feed: object | None = None,
) -> list[Path]:
    """Write the synthetic candles of each symbol and timeframe that open at or after
    ``start_ms`` and close at or before ``end_close_ms`` to ``folder`` as replay files.
    Returns the paths written. ``feed`` defaults to a cache-less ``SyntheticFeed(seed)``."""
    from kernel.feeds.synthetic import MAX_LIMIT, SyntheticFeed

    if feed is None:
        feed = SyntheticFeed(seed, candle_cache_size=0, window_cache_size=0)
    chunk = min(5000, MAX_LIMIT)
    written = []
    for symbol in symbols:
        for timeframe in timeframes:
            tf = timeframe_ms(timeframe)
            first_open = -(-int(start_ms) // tf) * tf  # first aligned open >= start_ms
            last_open = last_closed_open_ms(end_close_ms, tf)
            candles: list[Candle] = []
            open_ = first_open
            while open_ <= last_open:
                n = min(chunk, (last_open - open_) // tf + 1)
                candles.extend(feed.candles(symbol, timeframe, open_ + n * tf, n))  # type: ignore[attr-defined]
                open_ += n * tf
            written.append(write_csv(Path(folder) / csv_name(symbol, timeframe), candles))
    return written
