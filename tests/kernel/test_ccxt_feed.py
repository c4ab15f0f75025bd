"""The ccxt feed on ccxt's real Binance class, with recorded klines at the HTTP boundary.

Time is injected: ``now`` is the local clock, the fake exchange's clock is ``now +
skew``, and the feed's sleep moves both.
"""
from __future__ import annotations

import threading

import pytest

from kernel.exchange_client import ExchangeClient, build_exchange
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
