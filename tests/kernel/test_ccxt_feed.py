"""The ccxt feed on ccxt's real Binance class, with recorded klines at the HTTP boundary.

Time is injected: ``now`` is the local clock, the fake exchange's clock is ``now +
skew``, and the feed's sleep moves both.
"""
from __future__ import annotations

import json
import threading

import pytest

from kernel.exchange_client import ExchangeClient, RateLimiter, build_exchange
from kernel.feeds import Feed
from kernel.feeds.ccxt_feed import CcxtFeed
from kernel.feeds.synthetic import SyntheticFeed
from tests.kernel.ccxt_http import FakeBinance

M5 = 300_000
T0 = 1_699_995_600_000  # 21:00Z: the first recorded kline's open
GAP = T0 + 7 * M5  # 21:35Z: no kline recorded (nothing traded)
FORMING = T0 + 13 * M5  # 22:05Z: the last recorded kline, still forming until 22:10Z


class World:
    """Local clock, exchange clock (local + skew), a fake Binance and a feed on it."""

    def __init__(self, now_ms: int, skew_ms: int = 0, **feed_kw) -> None:
        self.now = now_ms
        self.skew = skew_ms
        self.slept: list[float] = []
        self.fake = FakeBinance(server_clock=lambda: self.now + self.skew)
        exchange = build_exchange("binance")
        self.fake.mount(exchange)
        self.client = ExchangeClient(exchange, backoff_s=0.001, max_backoff_s=0.002)
        feed_kw.setdefault("max_wait_ms", 0)
        self.feed = CcxtFeed(self.client, wall_ms=lambda: self.now, sleep=self.sleep,
                             monotonic=lambda: self.now / 1000.0, **feed_kw)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += int(seconds * 1000)

    def klines(self) -> list:
        return self.fake.requests_to("GET", "/api/v3/klines")


def opens(candles) -> list[int]:
    return [c.ts for c in candles]


def same(got, expected) -> bool:
    """Equal candles, as far as the 8 decimals of an exchange's kline rows go."""
    fields = ("open", "high", "low", "close", "volume")
    return len(got) == len(expected) and all(
        a.ts == b.ts and all(abs(getattr(a, f) - getattr(b, f)) <= 1e-7 * max(1.0, abs(getattr(b, f))) for f in fields)
        for a, b in zip(got, expected)
    )


def test_it_is_a_feed() -> None:
    assert isinstance(World(FORMING + 180_000).feed, Feed)


def test_only_closed_candles_and_a_missing_one_stays_missing() -> None:
    w = World(FORMING + 180_000)  # 22:08Z: the 22:05 candle is forming
    got = w.feed.candles("BTC/USDT", "5m", FORMING + M5, 9)  # asked at 22:10Z, which has not come yet
    # The forming candle is not served; the 21:35 gap is not filled: 8 candles, not 9.
    assert opens(got) == [T0 + i * M5 for i in range(4, 13) if T0 + i * M5 != GAP]
    assert got[-1].close == 36387.16 and got[-1].volume == 57.92362  # the recorded 22:00Z kline, parsed by ccxt
    [req] = w.klines()
    assert req.query["symbol"] == "BTCUSDT" and req.query["interval"] == "5m"


def test_the_exchange_clock_decides_not_the_local_one() -> None:
    # The local clock runs 10 minutes ahead: by it, the 22:05 candle closed long ago. By Binance's, it has not.
    w = World(FORMING + 180_000 + 600_000, skew_ms=-600_000)
    got = w.feed.candles("BTC/USDT", "5m", FORMING + M5, 3)
    assert opens(got) == [FORMING - 3 * M5, FORMING - 2 * M5, FORMING - M5]  # up to 22:00Z, the last closed
    assert w.fake.requests_to("GET", "/api/v3/time"), "the offset was measured with fetch_time"


def test_a_close_a_moment_away_is_waited_for() -> None:
    w = World(FORMING + M5 - 200, max_wait_ms=2_000)  # 200 ms before 22:10Z by both clocks
    got = w.feed.candles("BTC/USDT", "5m", FORMING + M5, 2)
    assert w.slept == [pytest.approx(0.7, abs=0.01)]  # until the close plus the 500 ms grace
    assert opens(got) == [FORMING - M5, FORMING]


def test_a_late_candle_is_asked_for_again() -> None:
    w = World(FORMING + M5 + 30_000)  # 22:10:30Z: 22:05 closed, but Binance has not published it yet
    recorded = w.fake.klines[("BTCUSDT", "5m")]
    w.fake.klines[("BTCUSDT", "5m")] = recorded[:-1]
    assert opens(w.feed.candles("BTC/USDT", "5m", FORMING + M5, 3))[-1] == FORMING - M5
    assert opens(w.feed.candles("BTC/USDT", "5m", FORMING + M5, 3))[-1] == FORMING - M5
    assert len(w.klines()) == 1, "asked again at most once per refetch_ms"
    w.fake.klines[("BTCUSDT", "5m")] = recorded  # published, late
    w.now += 1_500
    got = w.feed.candles("BTC/USDT", "5m", FORMING + M5, 3)
    assert opens(got) == [FORMING - 2 * M5, FORMING - M5, FORMING]
    assert w.klines()[-1].query["startTime"] == str(FORMING)  # only what the cache lacked


SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT", "DOGE/USDT", "AVAX/USDT", "LINK/USDT"]


def test_sixteen_slots_on_eight_symbols_cost_one_request_per_series_and_close() -> None:
    close = 1_700_001_000_000 - 1_700_001_000_000 % 900_000  # a 15m (and 5m) close
    w = World(close + 5_000)
    synthetic = SyntheticFeed(seed=11)
    for sym in SYMBOLS:
        for tf in ("5m", "15m"):
            w.fake.add_klines(sym.replace("/", ""), tf, synthetic.candles(sym, tf, close + 3_600_000, 400))
    results: dict[tuple, list] = {}
    errors: list[BaseException] = []

    def slot(sym: str, tf: str, i: int, at: int) -> None:
        try:
            results[(sym, tf, i)] = w.feed.candles(sym, tf, at, 100)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def round_at(at: int) -> None:
        threads = [threading.Thread(target=slot, args=(s, tf, i, at)) for s in SYMBOLS for tf in ("5m", "15m")
                   for i in range(2)]  # two slots per series: 32 requests at the same close
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    round_at(close)
    assert not errors and len(w.klines()) == 16
    for (sym, tf, _), got in results.items():
        assert same(got, synthetic.candles(sym, tf, close, 100))
    assert w.fake.max_inflight == 1, "one request at a time through the exchange instance"
    round_at(close)
    assert len(w.klines()) == 16, "the same close again: served from the cache"
    w.now += M5
    round_at(close + M5)  # the next 5m close: one small request per 5m series, none for 15m
    new = w.klines()[16:]
    assert len(new) == 8 and all(r.query["interval"] == "5m" and r.query["limit"] == "1" for r in new)
    assert same(results[("BTC/USDT", "5m", 0)], synthetic.candles("BTC/USDT", "5m", close + M5, 100))


def test_long_windows_are_fetched_in_pages() -> None:
    close = 1_700_001_000_000 - 1_700_001_000_000 % 900_000
    w = World(close + 5_000)
    synthetic = SyntheticFeed(seed=11)
    w.fake.add_klines("ETHUSDT", "5m", synthetic.candles("ETH/USDT", "5m", close, 1200))
    got = w.feed.candles("ETH/USDT", "5m", close, 1200)
    assert same(got, synthetic.candles("ETH/USDT", "5m", close, 1200))
    assert [r.query["limit"] for r in w.klines()] == ["500", "500", "200"]


# ---------------------------------------------------------------- concurrency, rate limit, cache


def test_the_rate_limiter_allows_a_burst_then_one_request_per_interval() -> None:
    now, slept = [0.0], []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(0.05, burst=4, monotonic=lambda: now[0], sleep=sleep)
    starts = []
    for _ in range(8):
        limiter.acquire()
        starts.append(now[0])
    # four at once (the series of one close), then one every 50 ms: never more than
    # burst + elapsed / interval requests in any stretch of time
    assert starts == pytest.approx([0, 0, 0, 0, 0.05, 0.10, 0.15, 0.20])
    now[0] += 10.0  # a quiet spell refills the bucket
    for _ in range(4):
        limiter.acquire()
    assert now[0] == pytest.approx(10.20)


def _concurrent_world(close: int, clones: int, **feed_kw) -> World:
    w = World(close + 5_000, **feed_kw)
    w.client.factory = lambda: w.fake.mount(build_exchange("binance"))
    w.clones = w.client.public_clones(clones)
    w.feed = CcxtFeed(w.client, fetch_clients=w.clones, wall_ms=lambda: w.now, sleep=w.sleep,
                      monotonic=lambda: w.now / 1000.0, max_wait_ms=0, **feed_kw)
    return w


def test_the_series_of_one_close_are_fetched_concurrently_one_instance_per_request() -> None:
    close = 1_700_001_000_000 - 1_700_001_000_000 % 900_000
    w = _concurrent_world(close, 3)
    synthetic = SyntheticFeed(seed=11)
    for sym in SYMBOLS:
        w.fake.add_klines(sym.replace("/", ""), "5m", synthetic.candles(sym, "5m", close + 3_600_000, 400))
    w.fake.latency_s = 0.05  # a request takes 50 ms: serial, 8 of them would take 400 ms
    busy: dict[int, int] = {}
    overlap: list[int] = []
    lock = threading.Lock()
    for c in (w.client, *w.clones):  # each instance: never two requests at once
        inner = c.exchange.fetch_ohlcv

        def wrapped(*a, _inner=inner, _id=id(c.exchange), **kw):
            with lock:
                busy[_id] = busy.get(_id, 0) + 1
                overlap.append(busy[_id])
            try:
                return _inner(*a, **kw)
            finally:
                with lock:
                    busy[_id] -= 1
        c.exchange.fetch_ohlcv = wrapped
    results: dict[str, list] = {}
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, w.feed.candles(s, "5m", close, 100)))
               for s in SYMBOLS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(same(results[s], synthetic.candles(s, "5m", close, 100)) for s in SYMBOLS)
    assert len(w.klines()) == 8
    assert 1 < w.fake.max_inflight <= 4, "up to four requests in flight, one per exchange instance"
    assert max(overlap) == 1
    assert sum(c.requests for c in w.clones) > 0
    assert w.client.limiter is not None and w.client.limiter.burst == 10
    assert w.client.limiter.interval_s == pytest.approx(w.client.exchange.rateLimit / 1000)
    assert len(w.fake.requests_to("GET", "/api/v3/exchangeInfo")) == 1, "markets loaded once, shared"


def test_the_cache_and_the_markets_survive_a_restart(tmp_path) -> None:
    close = 1_700_001_000_000 - 1_700_001_000_000 % 900_000
    synthetic = SyntheticFeed(seed=11)
    cache = tmp_path / "ccxt-cache" / "binance"

    def world() -> World:
        w = World(close + 5_000, cache_dir=cache)
        for sym in SYMBOLS[:2]:
            w.fake.add_klines(sym.replace("/", ""), "5m", synthetic.candles(sym, "5m", close + 3_600_000, 400))
        return w

    first = world()
    for sym in SYMBOLS[:2]:
        assert same(first.feed.candles(sym, "5m", close, 300), synthetic.candles(sym, "5m", close, 300))
    assert first.feed.markets_source == "exchange"
    assert first.feed.flush_cache()  # written off the cycles' path, by the feed's writer thread
    assert sorted(p.name for p in cache.iterdir()) == [
        "candles-BTC_USDT-5m.json", "candles-ETH_USDT-5m.json", "markets.json"]

    second = world()  # a restart: a new feed, a new exchange instance, the same state dir
    assert second.feed.markets_source == "saved"
    for sym in SYMBOLS[:2]:
        assert same(second.feed.candles(sym, "5m", close, 300), synthetic.candles(sym, "5m", close, 300))
    assert second.klines() == [] and second.fake.requests_to("GET", "/api/v3/exchangeInfo") == []
    second.now += M5
    got = second.feed.candles("BTC/USDT", "5m", close + M5, 300)
    assert same(got, synthetic.candles("BTC/USDT", "5m", close + M5, 300))
    [req] = second.klines()
    assert req.query["limit"] == "1", "only the candle closed since the restart"

    assert second.feed.flush_cache()

    # A torn or foreign file is ignored (and replaced at the next write), never trusted.
    (cache / "candles-BTC_USDT-5m.json").write_text('{"v": 1, "exchange": "binance", "candles": [[1, 2')
    (cache / "markets.json").write_text("[]")
    third = world()
    assert third.feed.markets_source is None
    assert same(third.feed.candles("BTC/USDT", "5m", close, 300), synthetic.candles("BTC/USDT", "5m", close, 300))
    assert len(third.klines()) == 1 and third.feed.markets_source == "exchange"
    assert third.feed.flush_cache()
    assert json.loads((cache / "candles-BTC_USDT-5m.json").read_text())["covered_to"] == close - M5


def test_exchange_url_rebases_every_rest_url_and_refuses_clear_text_off_loopback() -> None:
    from kernel.errors import OperationalError

    ex = build_exchange("binance", api_url="http://127.0.0.1:8123")
    assert ex.urls["api"]["public"] == "http://127.0.0.1:8123/api/v3"
    assert ex.urls["api"]["private"] == "http://127.0.0.1:8123/api/v3"
    assert ex.urls["api"]["sapi"] == "http://127.0.0.1:8123/sapi/v1"
    assert all(v.startswith("http://127.0.0.1:8123/") for v in ex.urls["api"].values())
    assert build_exchange("binance", api_url="https://proxy.example/binance").urls["api"]["public"] == \
        "https://proxy.example/binance/api/v3"
    for bad in ("http://10.1.2.3:80", "ftp://127.0.0.1", "http://127.0.0.1/?x=1", "127.0.0.1:80"):
        with pytest.raises(OperationalError):
            build_exchange("binance", api_url=bad)
    with pytest.raises(OperationalError, match="--sandbox and --exchange-url"):
        build_exchange("binance", api_url="http://127.0.0.1:1", sandbox=True)
