"""A deterministic synthetic market: a seeded price path for any symbol at any minute.

The log price of a symbol at the instant that starts minute ``m`` (``m * 60000`` ms
since the epoch) is a sum of

- five sinusoids with periods from about an hour to several weeks (periods and
  phases drawn from a hash of the seed and the symbol),
- five octaves of smooth "value noise" (hashed random levels at knots every 30 min,
  3 h, 12 h, 2 days and 2 weeks, joined by smoothstep curves): trends and
  reversals that do not repeat,
- a little per-minute jitter from a hash of (seed, symbol, minute),

scaled by a per-asset volatility and added to the log of a realistic base price.
Every term is computed in O(1) from ``m`` alone, so no history is needed and any
time can be asked for. The hash is splitmix64 over a blake2b digest of the symbol:
stable across processes (Python's ``hash()`` is salted per process).

Candles: the one-minute interval ``[m, m+1)`` opens at ``p(m)``, closes at
``p(m+1)``, reaches a hashed wick above/below those, and trades a hashed volume
(a multiple of 1/256, so that sums are exact). A candle of any timeframe
aggregates its one-minute intervals (open = first open, close = last close,
high/low = max/min, volume = sum), so a 15m candle equals the aggregate of its
three 5m candles exactly, and a candle's close equals the next one's open.
``last_price(symbol, at_ms)`` is ``p(at_ms // 60000)``: the price at the start of
the minute containing ``at_ms`` (never a later one), which is the close of the
candle that closed at ``at_ms`` when ``at_ms`` is a boundary.

Caching: computed candles and whole windows live in small bounded LRUs behind one
lock; concurrent identical window requests wait for a single computation, so a
thousand slots on the same symbol/timeframe asking at the same close cost one.
"""
from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

from kernel.feeds.feed import FeedError, _as_limit, last_closed_open_ms, timeframe_ms
from kernel.strategy_api import Candle

__all__ = ["SyntheticFeed", "BASE_PRICES", "MAX_LIMIT"]

MINUTE_MS = 60_000
MAX_LIMIT = 100_000  # candles per request

# Base prices against USDT, and a volatility multiplier (BTC = 1).
BASE_PRICES: dict[str, float] = {
    "BTC": 60_000.0,
    "ETH": 3_000.0,
    "SOL": 150.0,
    "XRP": 0.60,
    "ADA": 0.45,
    "DOGE": 0.12,
    "AVAX": 35.0,
    "LINK": 15.0,
}
_VOLATILITY: dict[str, float] = {
    "BTC": 1.0,
    "ETH": 1.2,
    "SOL": 1.7,
    "XRP": 1.4,
    "ADA": 1.5,
    "DOGE": 1.8,
    "AVAX": 1.7,
    "LINK": 1.5,
}
_STABLE_QUOTES = frozenset({"USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "USD"})

# (min period, max period) in minutes and log amplitude of the sinusoids.
_SINES = (
    (60, 150, 0.0020),
    (300, 700, 0.0050),
    (1000, 2200, 0.0100),
    (3000, 9000, 0.0250),
    (20000, 60000, 0.0500),
)
# (knot spacing in minutes, log amplitude) of the value-noise octaves.
_OCTAVES = ((30, 0.0040), (180, 0.0070), (720, 0.0140), (2880, 0.0300), (20160, 0.0800))
_JITTER = 0.0016  # log amplitude of the per-minute noise (before volatility)
_WICK = 0.0004  # max intra-minute excursion beyond open/close (before volatility)
_NOTIONAL_PER_MINUTE = 1_500_000.0  # quote volume of a typical minute
_VOLUME_QUANTUM = 256.0  # volumes are multiples of 1/256: sums are exact

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_TWO_PI = 2.0 * math.pi


def _mix64(x: int) -> int:
    """splitmix64: a stable, well-mixed 64-bit hash of a 64-bit integer."""
    x = (x + _GOLDEN) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _unit(h: int) -> float:
    """[0, 1) from the top 53 bits of a hash."""
    return (h >> 11) * (1.0 / 9007199254740992.0)


def _symbol_key(symbol: str) -> int:
    return int.from_bytes(hashlib.blake2b(symbol.encode("utf-8"), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class _Model:
    """Everything about one (seed, symbol) path that does not depend on time."""

    key: int  # mixes seed and symbol
    log_base: float
    vol: float
    sines: tuple[tuple[float, float, float], ...]  # (amplitude, omega rad/min, phase)
    octaves: tuple[tuple[int, float, int], ...]  # (spacing, amplitude, salt)
    jitter: float
    wick: float
    base_volume: float  # base-asset volume of a typical minute

    def level(self, salt: int, k: int) -> float:
        return 2.0 * _unit(_mix64(self.key ^ salt ^ ((k * 0xD1B54A32D192ED03) & _MASK))) - 1.0

    def log_prices(self, m0: int, count: int) -> list[float]:
        """Log prices at minutes ``m0 .. m0 + count - 1``. The knot levels of the value
        noise are hashed once per knot, not once per minute; the arithmetic is the
        same for every minute whatever ``m0`` and ``count`` are, so a minute's price
        never depends on the request that computed it."""
        sines = self.sines
        octaves = self.octaves
        knots = [(None, 0.0, 0.0)] * len(octaves)  # (k, v0, v1) per octave
        key = self.key
        jitter = self.jitter
        out = []
        for m in range(m0, m0 + count):
            x = 0.0
            for amp, omega, phase in sines:
                x += amp * math.sin(omega * m + phase)
            for i, (spacing, amp, salt) in enumerate(octaves):
                k, r = divmod(m, spacing)
                known_k, v0, v1 = knots[i]
                if known_k != k:
                    v0 = v1 if known_k == k - 1 else self.level(salt, k)
                    v1 = self.level(salt, k + 1)
                    knots[i] = (k, v0, v1)
                f = r / spacing
                x += amp * (v0 + (v1 - v0) * f * f * (3.0 - 2.0 * f))
            h = _mix64(key ^ ((m * 0xA24BAED4963EE407) & _MASK))
            # three 21-bit uniforms summed and centred: a cheap bell-shaped noise
            u = ((h & 0x1FFFFF) + ((h >> 21) & 0x1FFFFF) + ((h >> 42) & 0x1FFFFF)) / 2097152.0
            x += jitter * (u - 1.5)
            out.append(self.log_base + self.vol * x)
        return out

    def price(self, m: int) -> float:
        return math.exp(self.log_prices(m, 1)[0])

    def candle(self, first_minute: int, minutes: int) -> Candle:
        """Aggregate of the one-minute intervals ``[first_minute, first_minute + minutes)``."""
        key2 = self.key ^ 0x5851F42D4C957F2D
        logs = self.log_prices(first_minute, minutes + 1)
        prices = [math.exp(lp) for lp in logs]
        p0 = prices[0]
        open_ = p0
        high = -math.inf
        low = math.inf
        volume = 0.0
        for j in range(minutes):
            m = first_minute + j
            p1 = prices[j + 1]
            h = _mix64(key2 ^ ((m * 0xA24BAED4963EE407) & _MASK))
            up = (h & 0x1FFFFF) / 2097152.0
            down = ((h >> 21) & 0x1FFFFF) / 2097152.0
            busy = ((h >> 42) & 0x1FFFFF) / 2097152.0
            hi = max(p0, p1) * (1.0 + self.wick * up * up)
            lo = min(p0, p1) * (1.0 - self.wick * down * down)
            if hi > high:
                high = hi
            if lo < low:
                low = lo
            move = abs(logs[j + 1] - logs[j])
            v = self.base_volume * (0.4 + 1.2 * busy) * (1.0 + 150.0 * move)
            volume += round(v * _VOLUME_QUANTUM) / _VOLUME_QUANTUM
            p0 = p1
        return Candle(
            ts=first_minute * MINUTE_MS,
            open=open_,
            high=high,
            low=low,
            close=p0,
            volume=volume,
        )


def _split_symbol(symbol: str) -> tuple[str, str]:
    base, sep, quote = symbol.upper().partition("/")
    return base, quote if sep else ""


def _build_model(seed: int, symbol: str) -> _Model:
    sym = _symbol_key(symbol)
    key = _mix64(sym ^ _mix64(seed & _MASK))
    base, quote = _split_symbol(symbol)

    def u(i: int) -> float:  # the i-th hashed uniform of this (seed, symbol)
        return _unit(_mix64(key + i * _GOLDEN))

    # Base price and volatility do not depend on the seed: BTC is always near 60k.
    sym_u = _unit(_mix64(sym))
    if base in BASE_PRICES and quote in _STABLE_QUOTES:
        price, vol = BASE_PRICES[base], _VOLATILITY[base]
    elif base in BASE_PRICES and quote in BASE_PRICES:
        price = BASE_PRICES[base] / BASE_PRICES[quote]
        vol = 0.5 * (_VOLATILITY[base] + _VOLATILITY[quote])
    else:
        price = 10.0 ** (-2.0 + 6.0 * sym_u)  # 0.01 .. 10,000
        vol = 1.0 + _unit(_mix64(sym ^ 0x1234567)) * 1.0
    sines = tuple(
        (amp, _TWO_PI / (lo + (hi - lo) * u(2 * i)), _TWO_PI * u(2 * i + 1))
        for i, (lo, hi, amp) in enumerate(_SINES)
    )
    octaves = tuple(
        (spacing, amp, _mix64(key ^ (0x9E37 + i))) for i, (spacing, amp) in enumerate(_OCTAVES)
    )
    return _Model(
        key=key,
        log_base=math.log(price),
        vol=vol,
        sines=sines,
        octaves=octaves,
        jitter=_JITTER,
        wick=_WICK * vol,
        base_volume=_NOTIONAL_PER_MINUTE / price,
    )


class SyntheticFeed:
    """Seeded synthetic candles for any symbol, timeframe and time; thread-safe.

    ``candle_cache_size`` bounds the LRU of single candles (keyed by symbol,
    timeframe, open time), ``window_cache_size`` the LRU of whole answers to
    :meth:`candles`. Both are small by design: a sliding window costs one new
    candle per close, and identical concurrent requests share one computation.
    """

    def __init__(
        self, seed: int = 7, *, candle_cache_size: int = 50_000, window_cache_size: int = 1024
    ) -> None:
        if candle_cache_size < 0 or window_cache_size < 0:
            raise ValueError("cache sizes must be >= 0")
        self.seed = int(seed)
        self._candle_cap = candle_cache_size
        self._window_cap = window_cache_size
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._candle_cache: OrderedDict[tuple[str, int, int], Candle] = OrderedDict()
        self._window_cache: OrderedDict[tuple[str, int, int, int], tuple[Candle, ...]] = OrderedDict()
        self._inflight: dict[tuple[str, int, int, int], threading.Event] = {}
        self._stats = {"window_hits": 0, "window_computations": 0, "candles_computed": 0}

    def __repr__(self) -> str:
        return f"SyntheticFeed(seed={self.seed})"

    # ----------------------------------------------------------------- the path

    def _model(self, symbol: str) -> _Model:
        model = self._models.get(symbol)
        if model is None:
            if not isinstance(symbol, str) or not symbol:
                raise FeedError(f"symbol must be a non-empty string, not {symbol!r}")
            model = _build_model(self.seed, symbol)
            with self._lock:
                if len(self._models) >= 4096:
                    self._models.clear()
                self._models[symbol] = model
        return model

    def price_at_minute(self, symbol: str, minute: int) -> float:
        """The path price at the instant ``minute * 60000`` ms."""
        return self._model(symbol).price(int(minute))

    def last_price(self, symbol: str, at_ms: int) -> float:
        """The path price at the start of the minute containing ``at_ms``."""
        return self._model(symbol).price(int(at_ms) // MINUTE_MS)

    # ----------------------------------------------------------------- candles

    def candle(self, symbol: str, timeframe: str, ts: int) -> Candle:
        """The single candle of ``timeframe`` opening at ``ts`` (must be aligned)."""
        tf = timeframe_ms(timeframe)
        if ts % tf:
            raise FeedError(f"ts {ts} is not aligned to {timeframe}")
        return self._window(symbol, tf, ts, 1)[0]

    def candles(self, symbol: str, timeframe: str, end_close_ms: int, limit: int) -> list[Candle]:
        tf = timeframe_ms(timeframe)
        limit = _as_limit(limit)
        if limit <= 0:
            return []
        if limit > MAX_LIMIT:
            raise FeedError(f"limit {limit} is above the maximum of {MAX_LIMIT}")
        self._model(symbol)  # validates the symbol before anything is cached
        last_ts = last_closed_open_ms(end_close_ms, tf)
        return list(self._window(symbol, tf, last_ts, limit))

    def _window(self, symbol: str, tf: int, last_ts: int, limit: int) -> tuple[Candle, ...]:
        key = (symbol, tf, last_ts, limit)
        while True:
            with self._lock:
                hit = self._window_cache.get(key)
                if hit is not None:
                    self._window_cache.move_to_end(key)
                    self._stats["window_hits"] += 1
                    return hit
                event = self._inflight.get(key)
                if event is None:
                    event = threading.Event()
                    self._inflight[key] = event
                    break  # this thread computes
            event.wait()  # another thread computes it; then look again
        try:
            window = self._compute_window(symbol, tf, last_ts, limit)
            with self._lock:
                self._stats["window_computations"] += 1
                if self._window_cap:
                    self._window_cache[key] = window
                    while len(self._window_cache) > self._window_cap:
                        self._window_cache.popitem(last=False)
            return window
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            event.set()  # waiters retry: a hit, or (after an error) their own attempt

    def _compute_window(self, symbol: str, tf: int, last_ts: int, limit: int) -> tuple[Candle, ...]:
        first_ts = last_ts - (limit - 1) * tf
        stamps = range(first_ts, last_ts + 1, tf)
        found: dict[int, Candle] = {}
        with self._lock:
            for ts in stamps:
                c = self._candle_cache.get((symbol, tf, ts))
                if c is not None:
                    self._candle_cache.move_to_end((symbol, tf, ts))
                    found[ts] = c
        missing = [ts for ts in stamps if ts not in found]
        if missing:
            model = self._model(symbol)
            minutes = tf // MINUTE_MS
            fresh = [model.candle(ts // MINUTE_MS, minutes) for ts in missing]
            with self._lock:
                self._stats["candles_computed"] += len(fresh)
                for c in fresh:
                    found[c.ts] = c
                    if self._candle_cap:
                        self._candle_cache[(symbol, tf, c.ts)] = c
                while len(self._candle_cache) > self._candle_cap:
                    self._candle_cache.popitem(last=False)
        return tuple(found[ts] for ts in stamps)

    # ----------------------------------------------------------------- introspection

    def stats(self) -> dict[str, int]:
        """Counters and cache sizes (for tests and the status report)."""
        with self._lock:
            return {
                **self._stats,
                "candle_cache": len(self._candle_cache),
                "window_cache": len(self._window_cache),
            }

    def clear_cache(self) -> None:
        with self._lock:
            self._candle_cache.clear()
            self._window_cache.clear()
