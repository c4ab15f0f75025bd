"""What a kernel trades on: its clock, its candle feed and its broker, chosen from options.

============  ==========================================================================
feed          ``synthetic`` (seeded candles, the default), ``replay`` (CSV candles of
              ``replay_dir``, on a :class:`~kernel.replay_clock.ReplayClock`), ``ccxt``
              (closed candles from ``exchange``, on the wall clock)
broker        ``paper`` (a simulated exchange in the state dir, the default) or ``ccxt``
              (real orders on ``exchange``: needs keys and ``feed=ccxt``)
============  ==========================================================================

The ccxt broker and feed of one kernel share one :class:`~kernel.exchange_client.ExchangeClient`
(one rate limiter). Keys come from :func:`kernel.credentials.load_credentials`; once
loaded, every log handler of the process redacts them.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .clock import SimClock, WallClock
from .credentials import Credentials, RedactSecrets, load_credentials
from .errors import OperationalError

if TYPE_CHECKING:  # pragma: no cover
    from .options import KernelOptions

__all__ = ["Venue", "build_venue", "replay_span", "FEEDS", "BROKERS"]

FEEDS = ("synthetic", "replay", "ccxt")
BROKERS = ("paper", "ccxt")
# The ccxt feed fetches up to this many series at once (one exchange instance each, one shared
# rate limiter): the series of one close do not queue behind each other (docs/live-trading.md).
FEED_IO_CLIENTS = 4

log = logging.getLogger("kernel.venues")


@dataclass
class Venue:
    clock: Any
    feed: Any
    broker: Any
    client: Any = None  # the ExchangeClient, when ccxt is used
    credentials: Credentials | None = None


def feed_kind(options: "KernelOptions") -> str:
    kind = getattr(options, "feed", None)
    if kind is None:
        return "replay" if options.replay_dir is not None else "synthetic"
    return kind


def replay_span(feed: Any) -> tuple[int, int]:
    """(first candle's open, last candle's close) over every file of a replay feed."""
    from .feeds import timeframe_ms

    first, last = None, None
    for symbol, timeframe in feed.available():
        tf = timeframe_ms(timeframe)
        series = feed.candles(symbol, timeframe, 2**62, 10**9)
        if not series:
            continue
        first = series[0].ts if first is None else min(first, series[0].ts)
        last = series[-1].ts + tf if last is None else max(last, series[-1].ts + tf)
    if first is None or last is None:
        raise OperationalError(f"replay folder {feed.folder} has no candles")
    return first, last


def build_venue(
    options: "KernelOptions",
    *,
    state_dir: Path,
    resume_ms: int = 0,
    on_replay_end: Callable[[], None] | None = None,
    clock: Any = None,
    feed: Any = None,
    broker: Any = None,
) -> Venue:
    """The clock, feed and broker of ``options``; those passed in are kept as they are.
    ``resume_ms``: where the kernel's clock was when it last ran (from the ledger)."""
    kind = feed_kind(options)
    broker_kind = getattr(options, "broker", "paper") or "paper"
    exchange_id = getattr(options, "exchange", None)
    sandbox = bool(getattr(options, "sandbox", False))
    if kind not in FEEDS:
        raise OperationalError(f"unknown feed {kind!r}; one of {', '.join(FEEDS)}")
    if broker_kind not in BROKERS:
        raise OperationalError(f"unknown broker {broker_kind!r}; one of {', '.join(BROKERS)}")
    uses_ccxt = kind == "ccxt" or broker_kind == "ccxt"
    if uses_ccxt and not exchange_id:
        raise OperationalError("the ccxt feed and broker need an exchange (--exchange binance, ...)")
    if broker_kind == "ccxt" and kind != "ccxt" and feed is None:
        raise OperationalError("real orders need real prices: the ccxt broker needs the ccxt feed")
    exchange_url = getattr(options, "exchange_url", None)
    if sandbox and not uses_ccxt:
        raise OperationalError("--sandbox applies to the ccxt feed and broker only")
    if exchange_url and not uses_ccxt:
        raise OperationalError("--exchange-url applies to the ccxt feed and broker only")
    # A test exchange (--exchange-url) may be run through faster than real time, over its past
    # (--start): the feed still serves only candles closed by the exchange's clock.
    if kind == "ccxt" and options.speed != 1 and clock is None and not exchange_url:
        raise OperationalError("the ccxt feed runs on the wall clock: --speed must be 1")
    if kind != "replay" and not math.isfinite(options.speed) and clock is None:
        raise OperationalError("an unlimited speed is for replays only")
    costs = paper_costs(options)
    if costs and broker_kind != "paper":
        raise OperationalError("--fee-rate, --maker-fee-rate, --slippage-bps and --fill-price model the paper broker: "
                               "a real exchange charges its own fees and fills at its own prices")
    if costs.get("fill_price") == "next_open" and kind == "ccxt":
        raise OperationalError("--fill-price next-open needs a feed that has the next candle (synthetic or "
                               "replay); on the ccxt feed a paper order fills at the signal candle's close")

    venue = Venue(clock=clock, feed=feed, broker=broker)
    if uses_ccxt and (feed is None or broker is None):
        venue.client, venue.credentials = _exchange_client(options, exchange_id, sandbox, broker_kind)

    if venue.feed is None:
        if kind == "synthetic":
            from .feeds.synthetic import SyntheticFeed

            venue.feed = SyntheticFeed(seed=options.seed)
        elif kind == "replay":
            if options.replay_dir is None:
                raise OperationalError("the replay feed needs a replay dir (--replay-dir)")
            from .feeds.replay import ReplayFeed

            venue.feed = ReplayFeed(options.replay_dir)
        else:
            from .feeds.ccxt_feed import CcxtFeed

            venue.feed = CcxtFeed(venue.client, fetch_clients=venue.client.public_clones(FEED_IO_CLIENTS - 1),
                                  cache_dir=state_dir / "ccxt-cache" / venue.client.id)

    if venue.broker is None:
        if broker_kind == "paper":
            from .brokers.paper import BINANCE_SPOT_MARKETS, PaperBroker
            from .crash_points import paper_crash_hook

            if costs.get("fill_price") == "next_open":
                costs["next_open"] = next_open_lookup(venue.feed)
            markets = BINANCE_SPOT_MARKETS if options.paper_markets == "binance" else None  # minimums, steps
            venue.broker = PaperBroker(state_dir / "paper-exchange.sqlite3", cash=options.cash,
                                       crash_hook=paper_crash_hook(), markets=markets, **costs)
        else:
            from .brokers.ccxt_broker import CcxtBroker

            # A call and its retries must end well inside a cycle's deadline.
            budget = min(venue.client.retry_budget_s, options.cycle_deadline_ms / 1000.0 / 2)
            venue.broker = CcxtBroker(venue.client, retry_budget_s=budget)

    if venue.clock is None:
        start_ms = getattr(options, "start_ms", None)
        if kind == "replay":
            from .replay_clock import ReplayClock

            first, last = replay_span(venue.feed)
            start = start_ms if start_ms is not None else first
            venue.clock = ReplayClock(max(resume_ms, start), speed=options.speed, end_ms=last,
                                      on_end=on_replay_end)
        elif options.speed == 1 and start_ms is None:
            venue.clock = WallClock()
        else:
            start = start_ms if start_ms is not None else time.time_ns() // 1_000_000
            venue.clock = SimClock(options.speed, start_ms=max(resume_ms, start))
    return venue


def paper_costs(options: "KernelOptions") -> dict[str, Any]:
    """The cost model options given (docs/live-trading.md, "Cost models"), as PaperBroker
    keywords; those not given keep the paper broker's defaults."""
    out: dict[str, Any] = {}
    for name in ("fee_rate", "maker_fee_rate", "slippage_bps", "fill_price"):
        value = getattr(options, name, None)
        if value is not None:
            out[name] = value
    return out


def next_open_lookup(feed: Any) -> Callable[[str, int], float | None]:
    """``(symbol, at_ms) -> price``: the open of the feed's candle in progress at ``at_ms``,
    on the symbol's finest timeframe (a replay's smallest file, 1m on the synthetic feed).
    A cycle on time sends its order at its candle's close, so that is the next candle's
    open. None when the feed has no such candle (the end of replay data)."""
    from .feeds import timeframe_ms
    from .protocol import TIMEFRAMES

    def lookup(symbol: str, at_ms: int) -> float | None:
        if hasattr(feed, "available"):
            tfs = sorted({tf for sym, tf in feed.available() if sym == symbol}, key=timeframe_ms)
        else:
            tfs = [min(TIMEFRAMES, key=TIMEFRAMES.__getitem__)]
        for tf in tfs:
            step = timeframe_ms(tf)
            open_ms = int(at_ms) // step * step
            try:
                rows = feed.candles(symbol, tf, open_ms + step, 1)
            except Exception:  # noqa: BLE001 - a feed that cannot answer has no next open
                continue
            if rows and rows[-1].ts == open_ms:
                return float(rows[-1].open)
        return None

    return lookup


def _exchange_client(options: "KernelOptions", exchange_id: str, sandbox: bool, broker_kind: str):
    from .exchange_client import ExchangeClient, build_exchange

    credentials = None
    if broker_kind == "ccxt":
        credentials = load_credentials(exchange_id, secrets_file=getattr(options, "secrets_file", None))
        if credentials is None:
            raise OperationalError(
                f"no keys for {exchange_id}: set FORESIGHT_{exchange_id.upper()}_API_KEY and _SECRET, "
                "or pass --secrets-file"
            )
        install_log_redaction(credentials)
    url = getattr(options, "exchange_url", None)
    exchange = build_exchange(exchange_id, credentials=credentials, sandbox=sandbox, api_url=url)
    client = ExchangeClient(exchange, credentials=credentials, sandbox=sandbox,
                            factory=lambda: build_exchange(exchange_id, sandbox=sandbox, api_url=url))
    log.info("exchange %s%s, keys %s", exchange_id, " (sandbox)" if sandbox else f" at {url}" if url else "",
             credentials.describe()["source"] if credentials else "none (public data only)")
    return client, credentials


def install_log_redaction(credentials: Credentials, logger: logging.Logger | None = None) -> RedactSecrets:
    """Make every handler of ``logger`` (default: the root logger) blank these keys."""
    target = logger or logging.getLogger()
    flt = RedactSecrets(credentials.secret_values())
    for handler in target.handlers:
        handler.addFilter(flt)
    return flt
