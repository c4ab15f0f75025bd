"""Time from a candle close to all series of that close fetched, for 8 pairs, through ccxt's
Binance class and real loopback sockets (the fake exchange of tests/support/fake_binance.py).

Two feeds on the same exchange: ``serial`` (one exchange instance behind one lock, ccxt's
throttle: how the feed fetched before issue 12) and ``concurrent`` (the kernel's default now:
the main instance and 3 ``public_clones``, one shared rate limiter; kernel/venues.py
``FEED_IO_CLIENTS``; its cache saved in a temp dir as in a state dir). Eight threads, like the kernel's cycle workers, each ask one pair's 5m
window at the same close; the cache holds the earlier candles, so each series costs one request
(the new candle), as at every close in steady state. The fake answers each request after
``--latency-ms`` (a network round trip). The close grace the live feed waits first (500 ms past
the close by the exchange's clock) is not included: add it.

    .venv/bin/python -m bench.ccxt_feed_fetch              # 30 closes per feed, 40 ms per request
    .venv/bin/python -m bench.ccxt_feed_fetch --quick      # 8 closes
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.harness import emit, format_table, log, machine_info
from kernel.exchange_client import ExchangeClient, build_exchange
from kernel.feeds.ccxt_feed import CcxtFeed
from kernel.feeds.synthetic import SyntheticFeed
from tests.support.fake_binance import FakeBinanceServer

NAME = "ccxt_feed_fetch"
M5 = 300_000
PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT", "DOGE/USDT", "AVAX/USDT", "LINK/USDT"]


def feed_on(server: FakeBinanceServer, clones: int, cache_dir: Path | None) -> CcxtFeed:
    exchange = build_exchange("binance", api_url=server.url)
    client = ExchangeClient(exchange, factory=lambda: build_exchange("binance", api_url=server.url))
    return CcxtFeed(client, fetch_clients=client.public_clones(clones), close_grace_ms=0, max_wait_ms=0,
                    cache_dir=cache_dir)


def one_close(feed: CcxtFeed, close: int) -> float:
    """Seconds from the start of the close to the last of the 8 series served."""
    barrier = threading.Barrier(len(PAIRS) + 1)
    done: list[float] = []

    def worker(pair: str) -> None:
        barrier.wait()
        feed.candles(pair, "5m", close, 300)
        done.append(time.perf_counter())

    threads = [threading.Thread(target=worker, args=(p,)) for p in PAIRS]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return max(done) - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--closes", type=int, default=30)
    ap.add_argument("--latency-ms", type=float, default=40.0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    closes = 8 if args.quick else args.closes
    info = machine_info()
    now = time.time_ns() // 1_000_000
    last_close = now - now % M5
    first_close = last_close - (closes + 1) * M5
    synthetic = SyntheticFeed(seed=7)
    rows, summary = [], {}
    for name, clones in (("serial", 0), ("concurrent", 3)):
        with FakeBinanceServer() as server:
            for pair in PAIRS:
                server.add_candles(pair.replace("/", ""), "5m",
                                   synthetic.candles(pair, "5m", last_close + M5, 600))
            # the kernel's default now keeps the cache in the state dir (written by a writer thread)
            feed = feed_on(server, clones, Path(tempfile.mkdtemp(prefix="feed-cache-")) if clones else None)
            one_close(feed, first_close)  # markets and the window's history: not measured
            server.exchange.latency_s = args.latency_ms / 1000.0
            times = []
            for k in range(1, closes + 1):
                time.sleep(1.0)  # live, closes are minutes apart: the rate limiter's bucket refills
                times.append(one_close(feed, first_close + k * M5) * 1000)
            log(f"{name}: {closes} closes, median {statistics.median(times):.0f} ms")
            stats = feed.stats()
        q = statistics.quantiles(times, n=10) if len(times) >= 2 else times * 9
        rows.append([name, 1 + clones, closes, statistics.median(times), q[-1], max(times)])
        summary[f"{name}_median_ms"] = round(statistics.median(times), 1)
        summary[f"{name}_p90_ms"] = round(q[-1], 1)
        summary[f"{name}_fetches"] = stats["fetches"]
    result = {"summary": summary, "machine": info,
              "conditions": {"pairs": len(PAIRS), "timeframe": "5m", "latency_ms": args.latency_ms,
                             "closes": closes, "transport": "loopback HTTP, ccxt binance, fake exchange"}}
    table = format_table(["feed", "instances", "closes", "median ms", "p90 ms", "max ms"], rows)
    emit(NAME, result, [table])


if __name__ == "__main__":
    main()
