"""Feeds: the synthetic price path and CSV replay, with the closed-candle rule."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kernel.feeds import Feed, FeedError, last_closed_open_ms, timeframe_ms
from kernel.feeds.replay import (
    ReplayFeed,
    csv_name,
    export_synthetic,
    parse_csv_name,
    read_csv,
    write_csv,
)
from kernel.feeds.synthetic import BASE_PRICES, SyntheticFeed
from kernel.strategy_api import Candle

REPO = Path(__file__).resolve().parents[2]
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a boundary of every timeframe
M5 = 300_000
M15 = 900_000
H1 = 3_600_000


def check_window(candles, tf_ms, end_close_ms, limit):
    assert 0 < len(candles) <= limit
    for c in candles:
        assert c.ts % tf_ms == 0
        assert c.ts + tf_ms <= end_close_ms  # closed
        assert c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high
        assert c.volume > 0
    assert [c.ts for c in candles] == sorted(c.ts for c in candles)


# ====================================================================== interface


def test_feeds_satisfy_the_protocol(tmp_path):
    write_csv(tmp_path / "BTC-USDT_5m.csv", SyntheticFeed().candles("BTC/USDT", "5m", T0, 3))
    assert isinstance(SyntheticFeed(), Feed)
    assert isinstance(ReplayFeed(tmp_path), Feed)
    assert not isinstance(object(), Feed)


def test_timeframe_helpers():
    assert timeframe_ms("5m") == M5 and timeframe_ms("1d") == 86_400_000
    with pytest.raises(FeedError, match="unknown timeframe"):
        timeframe_ms("7m")
    assert last_closed_open_ms(T0, M5) == T0 - M5
    assert last_closed_open_ms(T0 - 1, M5) == T0 - 2 * M5
    assert last_closed_open_ms(T0 + M5 - 1, M5) == T0 - M5


def test_lazy_exports():
    import kernel.feeds as feeds

    assert feeds.SyntheticFeed is SyntheticFeed
    assert feeds.ReplayFeed is ReplayFeed
    with pytest.raises(AttributeError):
        feeds.NoSuchFeed  # noqa: B018


# ====================================================================== synthetic


def test_synthetic_is_deterministic_and_seeded():
    a = SyntheticFeed(7).candles("BTC/USDT", "5m", T0, 200)
    b = SyntheticFeed(7).candles("BTC/USDT", "5m", T0, 200)
    c = SyntheticFeed(8).candles("BTC/USDT", "5m", T0, 200)
    assert a == b
    assert len(a) == len(c) == 200
    assert [x.close for x in a] != [x.close for x in c]
    assert all(x.close != y.close for x, y in zip(a, c))
    assert SyntheticFeed(7).last_price("ETH/USDT", T0) == SyntheticFeed(7).last_price("ETH/USDT", T0)
    assert SyntheticFeed(7).last_price("ETH/USDT", T0) != SyntheticFeed(8).last_price("ETH/USDT", T0)


def test_synthetic_is_stable_across_processes():
    """No salted hash(): another interpreter with another hash seed agrees."""
    feed = SyntheticFeed(7)
    here = feed.candles("SOL/USDT", "15m", T0, 3)
    code = (
        "from kernel.feeds.synthetic import SyntheticFeed\n"
        f"print(repr([tuple(c.__getattribute__(f) for f in ('ts','open','high','low','close','volume')) "
        f"for c in SyntheticFeed(7).candles('SOL/USDT', '15m', {T0}, 3)]))\n"
    )
    for hash_seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
        ).stdout
        assert eval(out) == [(c.ts, c.open, c.high, c.low, c.close, c.volume) for c in here]


@pytest.mark.parametrize("tf,tf_ms", [("1m", 60_000), ("5m", M5), ("15m", M15), ("1h", H1)])
def test_synthetic_closed_candle_rule_at_and_around_boundaries(tf, tf_ms):
    feed = SyntheticFeed(7)
    boundary = T0 + 7 * H1  # a boundary of each of these timeframes
    at = feed.candles("BTC/USDT", tf, boundary, 5)
    check_window(at, tf_ms, boundary, 5)
    assert len(at) == 5
    assert at[-1].ts + tf_ms == boundary  # the candle closing exactly at the boundary is in
    assert [c.ts for c in at] == [boundary - (5 - i) * tf_ms for i in range(5)]

    before = feed.candles("BTC/USDT", tf, boundary - 1, 5)
    check_window(before, tf_ms, boundary - 1, 5)
    assert before[-1].ts + tf_ms == boundary - tf_ms  # one ms early: that one is still forming
    assert before[1:] == at[:-1]

    after = feed.candles("BTC/USDT", tf, boundary + tf_ms - 1, 5)
    assert after == at  # until the next boundary, the same closed candles


def test_synthetic_limit_and_errors():
    feed = SyntheticFeed(7)
    assert feed.candles("BTC/USDT", "5m", T0, 0) == []
    assert len(feed.candles("BTC/USDT", "5m", T0, 1)) == 1
    with pytest.raises(FeedError, match="unknown timeframe"):
        feed.candles("BTC/USDT", "2m", T0, 5)
    with pytest.raises(FeedError):
        feed.candles("BTC/USDT", "5m", T0, 10**9)
    with pytest.raises(FeedError):
        feed.candles("", "5m", T0, 5)
    with pytest.raises(FeedError, match="aligned"):
        feed.candle("BTC/USDT", "5m", T0 + 1)
    with pytest.raises(FeedError, match="limit must be an integer"):
        feed.candles("BTC/USDT", "5m", T0, 2.5)
    import numpy as np

    assert feed.candles("BTC/USDT", "5m", T0, np.int64(3)) == feed.candles("BTC/USDT", "5m", T0, 3)


@pytest.mark.parametrize("big,small", [("15m", "5m"), ("1h", "15m"), ("1h", "1m"), ("4h", "1h")])
def test_synthetic_timeframes_agree(big, small):
    feed = SyntheticFeed(7)
    big_ms, small_ms = timeframe_ms(big), timeframe_ms(small)
    n = big_ms // small_ms
    end = T0 + 8 * 14_400_000
    larger = feed.candles("ETH/USDT", big, end, 3)
    smaller = feed.candles("ETH/USDT", small, end, 3 * n)
    for i, c in enumerate(larger):
        parts = smaller[i * n : (i + 1) * n]
        assert parts[0].ts == c.ts
        assert c.open == parts[0].open
        assert c.close == parts[-1].close
        assert c.high == max(p.high for p in parts)
        assert c.low == min(p.low for p in parts)
        assert c.volume == sum(p.volume for p in parts)  # exact: volumes are multiples of 1/256


def test_synthetic_continuity_and_last_price():
    feed = SyntheticFeed(7)
    candles = feed.candles("BTC/USDT", "5m", T0, 50)
    for prev, nxt in zip(candles, candles[1:]):
        assert nxt.open == prev.close  # the close of one candle is the next one's open
    last = candles[-1]
    # at the close time the last price is that candle's close
    assert feed.last_price("BTC/USDT", last.ts + M5) == last.close
    # inside a minute: the price at its start (never a later one)
    assert feed.last_price("BTC/USDT", last.ts + M5 + 59_999) == last.close
    assert feed.last_price("BTC/USDT", last.ts + M5 + 60_000) != last.close
    assert feed.last_price("BTC/USDT", last.ts) == last.open


def test_synthetic_prices_are_realistic_and_move():
    feed = SyntheticFeed(7)
    for base, price in BASE_PRICES.items():
        candles = feed.candles(f"{base}/USDT", "1h", T0, 24 * 14)
        closes = [c.close for c in candles]
        assert price * 0.5 < min(closes) <= max(closes) < price * 2, base
        # trends and reversals: the range over two weeks is more than 3%
        assert max(closes) / min(closes) > 1.03, base
    # two days of 5m candles have several local highs and lows of at least 0.5%
    closes = [c.close for c in feed.candles("BTC/USDT", "5m", T0, 576)]
    swings, anchor, direction = 0, closes[0], 0
    for x in closes:
        move = x / anchor - 1
        if direction >= 0 and move < -0.005 or direction <= 0 and move > 0.005:
            swings += 1
            direction = -1 if move < 0 else 1
            anchor = x
        elif (direction > 0 and x > anchor) or (direction < 0 and x < anchor):
            anchor = x
    assert swings >= 4
    # unknown symbols get a stable, positive, hash-derived price
    foo = feed.last_price("FOO/USDT", T0)
    assert foo > 0 and foo == SyntheticFeed(7).last_price("FOO/USDT", T0)
    # the seed moves the path, not the base price
    assert 0.5 < foo / SyntheticFeed(99).last_price("FOO/USDT", T0) < 2
    assert not 0.5 < foo / feed.last_price("BAR/USDT", T0) < 2  # another symbol, another base
    # a cross of two known assets is priced as their ratio
    assert 0.02 < feed.last_price("ETH/BTC", T0) < 0.1


def test_synthetic_cache_computes_a_shared_window_once():
    feed = SyntheticFeed(7)
    barrier = threading.Barrier(32)
    results = []

    def worker():
        barrier.wait()
        results.append(feed.candles("BTC/USDT", "5m", T0 + H1, 300))

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 32 and all(r == results[0] for r in results)
    stats = feed.stats()
    assert stats["window_computations"] == 1
    assert stats["window_hits"] == 31
    assert stats["candles_computed"] == 300
    # the next close costs one new candle, not a new window of 300
    feed.candles("BTC/USDT", "5m", T0 + H1 + M5, 300)
    assert feed.stats()["candles_computed"] == 301
    # a caller mutating its list does not touch the cache
    results[0].clear()
    assert len(feed.candles("BTC/USDT", "5m", T0 + H1, 300)) == 300


def test_synthetic_cache_is_bounded():
    feed = SyntheticFeed(7, candle_cache_size=100, window_cache_size=3)
    for i in range(10):
        feed.candles("BTC/USDT", "5m", T0 + i * H1, 40)
    stats = feed.stats()
    assert stats["candle_cache"] <= 100 and stats["window_cache"] <= 3
    assert stats["window_computations"] == 10
    # evicted answers are recomputed identically
    fresh = SyntheticFeed(7).candles("BTC/USDT", "5m", T0, 40)
    assert feed.candles("BTC/USDT", "5m", T0, 40) == fresh
    uncached = SyntheticFeed(7, candle_cache_size=0, window_cache_size=0)
    assert uncached.candles("BTC/USDT", "5m", T0, 40) == fresh
    assert uncached.stats()["candle_cache"] == 0


def test_synthetic_windows_do_not_depend_on_the_request():
    """A candle is the same whether computed alone, in a long window or a short one."""
    feed = SyntheticFeed(7)
    long = feed.candles("LINK/USDT", "15m", T0, 100)
    other = SyntheticFeed(7)
    assert other.candles("LINK/USDT", "15m", T0 - 50 * M15, 10) == long[40:50]
    assert other.candle("LINK/USDT", "15m", long[70].ts) == long[70]


# ====================================================================== replay


@pytest.fixture()
def replay_dir(tmp_path):
    export_synthetic(tmp_path, ["BTC/USDT", "ETH/USDT"], ["5m", "15m"], T0 - 86_400_000, T0)
    return tmp_path


def test_export_and_names(replay_dir):
    names = sorted(p.name for p in replay_dir.iterdir())
    assert names == ["BTC-USDT_15m.csv", "BTC-USDT_5m.csv", "ETH-USDT_15m.csv", "ETH-USDT_5m.csv"]
    assert csv_name("BTC/USDT", "5m") == "BTC-USDT_5m.csv"
    assert parse_csv_name("ETH-USDT_15m.csv") == ("ETH/USDT", "15m")
    with pytest.raises(FeedError):
        parse_csv_name("ETH-USDT_7m.csv")
    with pytest.raises(FeedError):
        csv_name("BTC_USDT", "5m")
    lines = (replay_dir / "BTC-USDT_5m.csv").read_text().splitlines()
    assert lines[0] == "ts,open,high,low,close,volume"
    assert len(lines) == 1 + 288  # one day of 5m candles, all closed by T0
    assert ReplayFeed(replay_dir).available() == [
        ("BTC/USDT", "5m"), ("BTC/USDT", "15m"), ("ETH/USDT", "5m"), ("ETH/USDT", "15m"),
    ]


@pytest.mark.parametrize("tf,tf_ms", [("5m", M5), ("15m", M15)])
def test_replay_round_trip_matches_synthetic(replay_dir, tf, tf_ms):
    synth, replay = SyntheticFeed(7), ReplayFeed(replay_dir)
    for end in (T0, T0 - 1, T0 - tf_ms, T0 - 5 * H1 + 1, T0 + 10 * H1):
        got = replay.candles("BTC/USDT", tf, end, 20)
        want = synth.candles("BTC/USDT", tf, min(end, T0), 20)
        assert got == want  # exact floats: repr round-trips
        check_window(got, tf_ms, end, 20)
    # more than the file holds: all of it, oldest first
    assert len(replay.candles("BTC/USDT", tf, T0, 10_000)) == 86_400_000 // tf_ms
    # nothing closed yet
    assert replay.candles("BTC/USDT", tf, T0 - 86_400_000 + tf_ms - 1, 5) == []
    assert replay.candles("BTC/USDT", tf, T0, 0) == []


def test_replay_gaps_are_not_filled(tmp_path):
    candles = SyntheticFeed(7).candles("BTC/USDT", "5m", T0, 30)
    kept = candles[:10] + candles[20:]  # a 50-minute hole
    write_csv(tmp_path / "BTC-USDT_5m.csv", kept)
    feed = ReplayFeed(tmp_path)
    got = feed.candles("BTC/USDT", "5m", T0, 15)
    assert got == kept[-15:]
    assert [c.ts for c in got][:5] == [candles[i].ts for i in (5, 6, 7, 8, 9)]
    # asking for a close inside the hole gives the candles before it, none invented
    inside = feed.candles("BTC/USDT", "5m", candles[15].ts, 3)
    assert inside == candles[7:10]
    # last price inside the hole: the last close before it
    assert feed.last_price("BTC/USDT", candles[15].ts) == candles[9].close


def test_replay_last_price(replay_dir):
    synth, replay = SyntheticFeed(7), ReplayFeed(replay_dir)
    five = synth.candles("BTC/USDT", "5m", T0, 3)
    assert replay.last_price("BTC/USDT", T0) == five[-1].close
    assert replay.last_price("BTC/USDT", T0 - 1) == five[-2].close
    assert replay.last_price("BTC/USDT", T0 + 10 * H1) == five[-1].close  # the file ended
    assert replay.last_price("BTC/USDT", T0) == synth.last_price("BTC/USDT", T0)
    with pytest.raises(FeedError, match="no candle"):
        replay.last_price("BTC/USDT", T0 - 86_400_000)
    with pytest.raises(FeedError, match="no replay file"):
        replay.last_price("SOL/USDT", T0)


def test_replay_last_price_uses_the_latest_close_over_timeframes(tmp_path):
    synth = SyntheticFeed(7)
    five = synth.candles("BTC/USDT", "5m", T0 - H1, 24)  # the 5m file stops an hour early
    # another source for 15m (1% off), so that it matters which file answers
    fifteen = [
        Candle(c.ts, c.open * 1.01, c.high * 1.01, c.low * 1.01, c.close * 1.01, c.volume)
        for c in synth.candles("BTC/USDT", "15m", T0, 8)
    ]
    write_csv(tmp_path / "BTC-USDT_5m.csv", five)
    write_csv(tmp_path / "BTC-USDT_15m.csv", fifteen)
    feed = ReplayFeed(tmp_path)
    assert feed.last_price("BTC/USDT", T0) == fifteen[-1].close != five[-1].close
    # when both have a candle closing at the same time, the finer one answers
    assert feed.last_price("BTC/USDT", T0 - H1) == five[-1].close == synth.last_price("BTC/USDT", T0 - H1)
    assert fifteen[-5].ts + M15 == T0 - H1 and fifteen[-5].close != five[-1].close
    # between 15m closes, a later 5m close wins over the older 15m one
    assert feed.last_price("BTC/USDT", T0 - H1 - M5) == five[-2].close


def test_replay_single_file(replay_dir):
    feed = ReplayFeed(replay_dir / "ETH-USDT_15m.csv")
    assert feed.available() == [("ETH/USDT", "15m")]
    assert feed.candles("ETH/USDT", "15m", T0, 4) == SyntheticFeed(7).candles("ETH/USDT", "15m", T0, 4)
    with pytest.raises(FeedError, match="serves only"):
        feed.candles("ETH/USDT", "5m", T0, 4)


def test_replay_missing(tmp_path):
    with pytest.raises(FeedError, match="does not exist"):
        ReplayFeed(tmp_path / "nope")
    feed = ReplayFeed(tmp_path)
    with pytest.raises(FeedError, match="BTC-USDT_5m.csv"):
        feed.candles("BTC/USDT", "5m", T0, 5)
    with pytest.raises(FeedError, match="unknown timeframe"):
        feed.candles("BTC/USDT", "9m", T0, 5)


GOOD = f"{T0},100,101,99,100.5,3\n{T0 + M5},100.5,102,100,101,4\n"


@pytest.mark.parametrize(
    "text,line,message",
    [
        (f"ts,open,high,low,close,volume\n{T0},100,101,99,100.5\n", 2, "expected 6 columns"),
        (f"ts,open,high,low,close,volume\n{T0},100,101,99,abc,3\n", 2, "close 'abc' is not a number"),
        (GOOD + f"{T0 + 2 * M5},100,nan,99,100,3\n", 3, "not a finite number"),
        (GOOD + f"{T0 + 2.5 * M5},100,101,99,100,3\n", 3, "not an integer"),
        (GOOD + f"{T0 + 2 * M5},100,101,99,102,3\n", 3, "inconsistent candle"),
        (GOOD + f"{T0 + 2 * M5},100,101,99,100,-1\n", 3, "volume must not be negative"),
        (GOOD + f"{T0 + 2 * M5 + 1},100,101,99,100,3\n", 3, "not aligned to 5m"),
        (GOOD + f"{T0},100,101,99,100,3\n", 3, "unsorted timestamp"),
        (GOOD + f"{T0 + M5},100,101,99,100,3\n", 3, "duplicate timestamp"),
        ("time,o,h,l,c,v\n" + GOOD, 1, "header"),
    ],
)
def test_replay_malformed_rows_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "BTC-USDT_5m.csv"
    path.write_text(text)
    with pytest.raises(FeedError) as info:
        ReplayFeed(tmp_path).candles("BTC/USDT", "5m", T0 + H1, 10)
    assert f"{path}:{line}:" in str(info.value)
    assert message in str(info.value)


def test_replay_accepts_headerless_and_blank_lines(tmp_path):
    path = tmp_path / "BTC-USDT_5m.csv"
    path.write_text(GOOD + "\n")
    got = read_csv(path, "5m")
    assert got == [
        Candle(T0, 100.0, 101.0, 99.0, 100.5, 3.0),
        Candle(T0 + M5, 100.5, 102.0, 100.0, 101.0, 4.0),
    ]
    assert ReplayFeed(tmp_path).candles("BTC/USDT", "5m", T0 + 2 * M5, 10) == got
    # only the first candle had closed at T0 + M5
    assert ReplayFeed(tmp_path).candles("BTC/USDT", "5m", T0 + 2 * M5 - 1, 10) == got[:1]


def test_write_csv_refuses_unsorted_and_leaves_no_temp_files(tmp_path):
    candles = SyntheticFeed(7).candles("BTC/USDT", "5m", T0, 3)
    with pytest.raises(FeedError, match="strictly increasing"):
        write_csv(tmp_path / "x" / "BTC-USDT_5m.csv", [candles[1], candles[0]])
    path = write_csv(tmp_path / "x" / "BTC-USDT_5m.csv", candles)
    assert sorted(p.name for p in path.parent.iterdir()) == ["BTC-USDT_5m.csv"]
    assert read_csv(path, "5m") == candles


def test_replay_is_thread_safe(replay_dir):
    feed = ReplayFeed(replay_dir)
    want = SyntheticFeed(7).candles("ETH/USDT", "5m", T0, 50)
    barrier = threading.Barrier(16)
    results = []

    def worker():
        barrier.wait()
        results.append(feed.candles("ETH/USDT", "5m", T0, 50))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16 and all(r == want for r in results)
