"""``python manage.py runkernel --state-dir DIR``: build a kernel, run it until SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import signal
from datetime import datetime, timezone
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from kernel.errors import OperationalError
from kernel.kernel import Kernel, KernelOptions
from kernel.venues import BROKERS, FEEDS


class Command(BaseCommand):
    help = "Run the execution kernel on a state dir until SIGTERM/SIGINT."

    def add_arguments(self, parser):
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
        parser.add_argument("--replay-dir", default=None, help="replay candles from CSV files in this folder")
        parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic feed")
        parser.add_argument("--cash", type=float, default=100_000.0, help="paper broker starting cash (USDT)")
        parser.add_argument("--feed", choices=FEEDS, default=None,
                            help="candles: synthetic (default), replay (needs --replay-dir) or ccxt (--exchange)")
        parser.add_argument("--broker", choices=BROKERS, default="paper",
                            help="orders: paper (default) or ccxt (real orders on --exchange; needs --feed ccxt)")
        parser.add_argument("--exchange", default=None, help="ccxt exchange id for --feed/--broker ccxt (binance, okx...)")
        parser.add_argument("--sandbox", action="store_true", help="use the exchange's sandbox (test) URLs")
        parser.add_argument("--secrets-file", default=None,
                            help="JSON file of API keys, outside the repo, mode 600 (else FORESIGHT_<EXCHANGE>_API_KEY...)")
        parser.add_argument("--start", default=None,
                            help="simulated clock start, ISO 8601 or epoch ms (a replay's default: its first candle)")

    def handle(self, *args, **opts):
        state_dir = Path(opts["state_dir"] or settings.FORESIGHT_STATE_DIR)
        for name in ("speed", "tick_ms", "workers", "cycle_deadline_ms", "reload_budget_ms"):
            if not opts[name] > 0:
                raise CommandError(f"--{name.replace('_', '-')} must be > 0")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            kernel = Kernel(KernelOptions(
                state_dir=state_dir,
                strategies_dir=Path(opts["strategies_dir"]) if opts["strategies_dir"] else None,
                speed=opts["speed"], tick_ms=opts["tick_ms"], workers=opts["workers"],
                cycle_deadline_ms=opts["cycle_deadline_ms"], reload_budget_ms=opts["reload_budget_ms"],
                demo=opts["demo"], seed=opts["seed"], cash=opts["cash"],
                replay_dir=Path(opts["replay_dir"]) if opts["replay_dir"] else None,
                feed=opts["feed"], broker=opts["broker"], exchange=opts["exchange"], sandbox=opts["sandbox"],
                secrets_file=Path(opts["secrets_file"]) if opts["secrets_file"] else None,
                start_ms=_start_ms(opts["start"]),
            ))
        except OperationalError as exc:
            raise CommandError(str(exc)) from None
        signal.signal(signal.SIGTERM, lambda *_: kernel.stop())
        signal.signal(signal.SIGINT, lambda *_: kernel.stop())
        self.stderr.write(f"kernel pid {kernel.pid} on {kernel.state_dir} ({len(kernel.slots)} slots)")
        kernel.run()


def _start_ms(text: str | None) -> int | None:
    if text is None:
        return None
    if text.strip().lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--start {text!r} is neither ISO 8601 nor epoch milliseconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)
