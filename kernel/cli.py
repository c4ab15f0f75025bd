"""The kernel's command line: options → ``KernelOptions``, logging, signal handlers that call
``kernel.stop()``, and the run. No Django here: ``python -m kernel`` must start a kernel even
when the console cannot import; ``manage.py runkernel`` wraps the same functions and adds
only what needs Django (the default state dir from the settings).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn, Sequence

from .errors import OperationalError
from .kernel import Kernel, KernelOptions
from .metrics import ALLOW_REMOTE_ENV, MetricsAddressRefused, metrics_address_parse
from .log_setup import LOG_FORMATS, log_format_from_env, logging_install
from .venues import BROKERS, FEEDS

DESCRIPTION = "Run the execution kernel on a state dir until SIGTERM/SIGINT."
MAIN_PROG = "python -m kernel"
# Options that must be > 0: a zero tick, speed or deadline would spin or never fire.
POSITIVE_OPTIONS = ("speed", "tick_ms", "workers", "cycle_deadline_ms", "reload_budget_ms", "keep_versions")


class BadOption(ValueError):
    """The command line is wrong: the operator fixes it and starts again."""


def add_kernel_arguments(parser: argparse.ArgumentParser) -> None:
    """The kernel's options, on any argparse parser (Django's command parser is one)."""
    parser.add_argument("--state-dir", default=None, help="kernel state dir (default: FORESIGHT_STATE_DIR)")
    parser.add_argument("--demo", action="store_true",
                        help="when the state dir has no slots: the 16-slot reference deployment")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated clock speed (1 = wall clock)")
    parser.add_argument("--tick-ms", type=int, default=100, help="tick period in ms")
    parser.add_argument("--workers", type=int, default=8, help="cycle worker threads")
    parser.add_argument("--cycle-deadline-ms", type=int, default=10_000,
                        help="a cycle running longer is abandoned and its slot paused")
    parser.add_argument("--reload-budget-ms", type=int, default=2_000,
                        help="time budget of a new version's smoke evaluation")
    parser.add_argument("--strategies-dir", default=None, help="folder of strategy modules")
    parser.add_argument("--keep-versions", type=int, default=20,
                        help="versions.prune keeps this many stored versions per strategy (never prunes by itself)")
    parser.add_argument("--replay-dir", default=None, help="replay candles from CSV files in this folder")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic feed")
    parser.add_argument("--cash", type=float, default=100_000.0, help="paper broker starting cash (USDT)")
    parser.add_argument("--feed", choices=FEEDS, default=None,
                        help="candles: synthetic (default), replay (needs --replay-dir) or ccxt (--exchange)")
    parser.add_argument("--broker", choices=BROKERS, default="paper",
                        help="orders: paper (default) or ccxt (real orders on --exchange; needs --feed ccxt)")
    parser.add_argument("--exchange", default=None, help="ccxt exchange id for --feed/--broker ccxt (binance, okx...)")
    parser.add_argument("--sandbox", action="store_true", help="use the exchange's sandbox (test) URLs")
    parser.add_argument("--exchange-url", default=None,
                        help="send the exchange's REST requests to this base URL instead (a test server, a proxy): "
                             "http(s)://host[:port]; plain http only to loopback")
    parser.add_argument("--secrets-file", default=None,
                        help="JSON file of API keys, outside the repo, mode 600 (else FORESIGHT_<EXCHANGE>_API_KEY...)")
    parser.add_argument("--fee-rate", type=float, default=None,
                        help="paper broker: fee as a fraction of the notional (default 0.001 = 0.1 %%)")
    parser.add_argument("--maker-fee-rate", type=float, default=None,
                        help="paper broker: fee of a resting limit order when it fills (default: --fee-rate)")
    parser.add_argument("--slippage-bps", type=float, default=None,
                        help="paper broker: market orders fill this many bp against the taker (default 5)")
    parser.add_argument("--fill-price", choices=("close", "next-open"), default=None,
                        help="paper broker: a market order fills at the signal candle's close (default) "
                             "or at the next candle's open")
    parser.add_argument("--paper-markets", choices=("none", "binance"), default=None,
                        help="paper broker: refuse orders below the markets' minimums and off their amount steps, "
                             "as Binance spot would (default none: any quantity)")
    parser.add_argument("--start", default=None,
                        help="simulated clock start, ISO 8601 or epoch ms (a replay's default: its first candle)")
    parser.add_argument("--metrics-addr", default=None,
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (off by default; loopback only; "
                             "port 0 picks one, status.json's metrics_url says which); docs/monitoring.md")
    parser.add_argument("--metrics-allow-remote", action="store_true",
                        help=f"let --metrics-addr be a non-loopback address (or {ALLOW_REMOTE_ENV}=1)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                        help="text (default) or json: one JSON object a line (default: FORESIGHT_LOG_FORMAT)")


def options_check(*, opts: Mapping[str, Any]) -> None:
    """Refuse the values argparse's types let through but the kernel cannot run with."""
    for name in POSITIVE_OPTIONS:
        if not opts[name] > 0:
            raise BadOption(f"--{name.replace('_', '-')} must be > 0")
    if opts.get("metrics_addr"):
        try:
            metrics_address_parse(opts["metrics_addr"], allow_remote=bool(opts.get("metrics_allow_remote")))
        except MetricsAddressRefused as exc:
            raise BadOption(str(exc)) from None


def start_ms_parse(*, text: str | None) -> int | None:
    """``--start``: epoch milliseconds, or ISO 8601 (UTC when it names no zone)."""
    if text is None:
        return None
    if text.strip().lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadOption(f"--start {text!r} is neither ISO 8601 nor epoch milliseconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def log_format_choose(*, opts: Mapping[str, Any]) -> str:
    """--log-format, else FORESIGHT_LOG_FORMAT, else text."""
    try:
        return opts.get("log_format") or log_format_from_env()
    except ValueError as exc:
        raise BadOption(str(exc)) from None


def logging_configure(*, log_format: str = "text") -> None:
    logging_install(log_format=log_format, level=logging.INFO)


def kernel_build(*, opts: Mapping[str, Any], state_dir: Path) -> Kernel:
    """Check the options, set up logging and build the kernel (its ledger
    reconciled with the broker). Raises BadOption or OperationalError (``StateDirBusy`` when
    another kernel holds the state dir: the caller exits 1 with its one line); nothing runs yet."""
    options_check(opts=opts)
    log_format = log_format_choose(opts=opts)
    logging_configure(log_format=log_format)
    return Kernel(KernelOptions(
        state_dir=state_dir,
        strategies_dir=Path(opts["strategies_dir"]) if opts["strategies_dir"] else None,
        speed=opts["speed"], tick_ms=opts["tick_ms"], workers=opts["workers"],
        cycle_deadline_ms=opts["cycle_deadline_ms"], reload_budget_ms=opts["reload_budget_ms"],
        demo=opts["demo"], seed=opts["seed"], cash=opts["cash"],
        replay_dir=Path(opts["replay_dir"]) if opts["replay_dir"] else None,
        feed=opts["feed"], broker=opts["broker"], exchange=opts["exchange"], sandbox=opts["sandbox"],
        exchange_url=opts.get("exchange_url"),
        secrets_file=Path(opts["secrets_file"]) if opts["secrets_file"] else None,
        start_ms=start_ms_parse(text=opts["start"]),
        keep_versions=opts["keep_versions"],
        paper_markets=opts.get("paper_markets") if opts.get("paper_markets") != "none" else None,
        fee_rate=opts.get("fee_rate"), maker_fee_rate=opts.get("maker_fee_rate"),
        slippage_bps=opts.get("slippage_bps"),
        fill_price=opts["fill_price"].replace("-", "_") if opts.get("fill_price") else None,
        metrics_addr=opts.get("metrics_addr"), metrics_allow_remote=bool(opts.get("metrics_allow_remote")),
        log_format=log_format,
    ))


def signal_handlers_install(*, kernel: Kernel) -> None:
    """SIGTERM and SIGINT stop the kernel gracefully (its run loop returns)."""
    signal.signal(signal.SIGTERM, lambda *_: kernel.stop())
    signal.signal(signal.SIGINT, lambda *_: kernel.stop())


def kernel_serve(*, kernel: Kernel, say: Callable[[str], Any]) -> None:
    """Install the signal handlers, say which kernel runs where, and run until stopped."""
    signal_handlers_install(kernel=kernel)
    started = f"kernel pid {kernel.pid} on {kernel.state_dir} ({len(kernel.slots)} slots)"
    if kernel.options.log_format == "json":  # a log collector reads every line of stderr as JSON
        logging.getLogger("kernel").info(started)
    else:
        say(started)
    kernel.run()


class _MainParser(argparse.ArgumentParser):
    # A usage error exits 1 like every other refusal, as it did when this parser was Django's.
    def error(self, message: str) -> NoReturn:
        raise BadOption(message)


def main_parser() -> argparse.ArgumentParser:
    parser = _MainParser(prog=MAIN_PROG, description=DESCRIPTION)
    add_kernel_arguments(parser)
    return parser


def main(argv: Sequence[str]) -> None:
    """``python -m kernel``: the same options and the same kernel as ``runkernel``, but
    --state-dir is required (there are no settings to default to)."""
    parser = main_parser()
    try:
        opts = vars(parser.parse_args(argv))
        if not opts.get("state_dir"):
            raise BadOption("--state-dir is required here (there are no Django settings to default to)")
        kernel = kernel_build(opts=opts, state_dir=Path(opts["state_dir"]))
    except (BadOption, OperationalError) as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    kernel_serve(kernel=kernel, say=lambda text: print(text, file=sys.stderr))
