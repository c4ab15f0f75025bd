"""The options a kernel is built from (``runkernel``'s flags, or a test's choices)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["KernelOptions"]


@dataclass
class KernelOptions:
    state_dir: Path
    strategies_dir: Path | None = None
    speed: float = 1.0
    tick_ms: int = 100
    workers: int = 8
    cycle_deadline_ms: int = 10_000
    reload_budget_ms: int = 2_000
    late_after_ms: int = 1_000
    status_interval_ms: int = 1_000
    demo: bool = False
    seed: int = 7
    cash: float = 100_000.0
    replay_dir: Path | None = None
    smoke_slots: int = 3
    # Venue (kernel/venues.py). feed None: "replay" with a replay_dir, else "synthetic".
    feed: str | None = None  # synthetic | replay | ccxt
    broker: str = "paper"  # paper | ccxt
    exchange: str | None = None  # a ccxt exchange id, for the ccxt feed and broker
    sandbox: bool = False
    exchange_url: str | None = None  # another base URL for the exchange's REST API (a test server, a proxy)
    secrets_file: Path | None = None
    start_ms: int | None = None  # simulated clock start (a replay's default: its first candle)
    halt_cancel_wait_ms: int = 500  # how long engage_halt waits for the cancels before returning
    # Paper broker cost model (docs/live-trading.md, "Cost models"); None: the paper broker's
    # default (fee 0.1 %, slippage 5 bp, fill at the signal candle's close). Not for --broker ccxt.
    fee_rate: float | None = None  # fraction of the notional, in the quote currency
    maker_fee_rate: float | None = None  # a resting limit order's fee (None: fee_rate)
    slippage_bps: float | None = None  # against the taker, on market orders
    fill_price: str | None = None  # "close" (the signal candle's) | "next_open" (the next candle's open)
    paper_markets: str | None = None  # "binance": the paper broker enforces Binance spot's minimums and steps
    keep_versions: int = 20  # release store: versions.prune keeps this many per strategy (never prunes by itself)
    # Prometheus exporter (kernel/metrics.py, docs/monitoring.md): HOST:PORT, None = off; port 0 picks one.
    metrics_addr: str | None = None
    metrics_allow_remote: bool = False  # else a non-loopback metrics_addr is refused
    log_format: str = "text"  # text | json (kernel/log_setup.py); the process's logging, set up before the kernel
