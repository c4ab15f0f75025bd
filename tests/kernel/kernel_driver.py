"""An in-process Kernel on a ManualClock, driven with tick_once(), and the strategies folder
the in-process kernel tests run (conftest.py's ``strategies``; the sources are in
tests/support/strategy_sources.py).

Cycles still run on the kernel's worker threads (never on the tick thread), so the
driver ticks until the workers are done instead of sleeping.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kernel.brokers.paper import PaperBroker
from kernel.clock import ManualClock
from kernel.control import append_commands
from kernel.feeds.synthetic import SyntheticFeed
from kernel.kernel import Kernel, KernelOptions
from kernel.protocol import Command
from tests.support.strategy_sources import (FLIP_WITHOUT_JITTER, bare_helper_source, counter_source,
                                            tagged_hold_source)
from tests.support.waiting import wait_until

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
M5 = 300_000
M15 = 900_000

T = TypeVar("T")


# The in-process tests' strategies folder (conftest.py's ``strategies``): module name -> source.
STRATEGIES: dict[str, str] = {
    "__init__": "",
    "flip": FLIP_WITHOUT_JITTER,
    "tagged": tagged_hold_source(tag="v1"),
    "tag_helper": bare_helper_source(tag="v1"),
    "raiser": counter_source(after=3, how='raise RuntimeError(f"bad cycle {n}")'),
    "sleeper": counter_source(after=2, how="time.sleep(0.8)"),
    "hoarder": counter_source(after=3, how="_SEEN.append(n)"),
}


class Driver:
    """A kernel on a ManualClock, and the loop a test drives it with. ``broker_class``: the
    paper exchange, or a test's subclass of it (behind a slow network...)."""

    def __init__(self, state_dir: Path, strategies: Path, *,
                 broker_class: type[PaperBroker] = PaperBroker, **options: Any) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.strategies = strategies
        self.options = options
        self.broker_class = broker_class
        self.clock = ManualClock(T0 + 1_000)
        self.kernel = self._build()
        self._n = 0

    def _build(self) -> Kernel:
        opts = KernelOptions(state_dir=self.state_dir, strategies_dir=self.strategies, workers=4,
                             **self.options)
        broker = self.broker_class(self.state_dir / "paper-exchange.sqlite3", cash=100_000.0)
        return Kernel(opts, clock=self.clock, feed=SyntheticFeed(seed=7), broker=broker)

    def restart(self) -> None:
        self.kernel.shutdown()
        self.kernel = self._build()

    def close(self) -> None:
        self.kernel.shutdown()

    def settle(self, timeout: float = 20.0) -> None:
        """Tick (without moving the clock) until no cycle is in flight and every outcome
        and command is folded in."""
        k = self.kernel
        busy: list[str] = []

        def settled() -> bool:
            k.tick_once()
            busy[:] = [s.id for s in k.slots.values()
                       if s.inflight is not None and not (s.inflight.meta[0] != "cycle" and s.inflight.done.is_set())]
            return not busy and k.cycles.outcomes.empty() and not k.commands.busy and not k.commands.pending_ids

        wait_until(settled, timeout=timeout, what="the kernel to settle", poll=0.002,
                   last_seen=lambda: f"busy {busy}, pending {k.commands.pending_ids}")

    def tick_until(self, done: Callable[[], T], *, timeout: float, what: str, poll: float = 0.01) -> T:
        """Tick (without moving the clock) until ``done()`` holds, checking it before each tick."""
        def ticked() -> T:
            value = done()
            if not value:
                self.kernel.tick_once()
            return value

        return wait_until(ticked, timeout=timeout, what=what, poll=poll)

    def advance(self, ms: int, step_ms: int = 60_000) -> None:
        """Move the clock by ``ms`` in steps, settling after each step."""
        while ms > 0:
            step = min(step_ms, ms)
            self.clock.jump(step)
            ms -= step
            self.settle()

    def command(self, action: str, slot: str | None = None, **args: Any) -> dict:
        self._n += 1
        cid = f"t{self._n}-{action}"
        append_commands(self.state_dir, [Command(id=cid, action=action, slot=slot, args=args)])
        self.settle()
        return self.result(cid)

    def result(self, cid: str) -> dict:
        rows = [c for c in self.kernel.snapshot()["commands"] if c["id"] == cid]
        assert len(rows) == 1, f"{cid}: {rows}"
        return rows[0]

    def add_slot(self, slot: str, strategy: str, symbol: str = "BTC/USDT", timeframe: str = "5m",
                 **extra: Any) -> None:
        r = self.command("slot.add", slot, id=slot, symbol=symbol, timeframe=timeframe, strategy=strategy,
                         order_notional=500.0, max_notional=2000.0, **extra)
        assert r["result"] == "applied", r

    def slot(self, slot_id: str) -> dict:
        return next(s for s in self.kernel.snapshot()["slots"] if s["id"] == slot_id)

    def cycles(self, slot: str) -> list[dict]:
        return self.kernel.ledger.cycles(slot)


def make_driver(tmp_path: Path, strategies: Path, **options: Any) -> Driver:
    return Driver(tmp_path / "state", strategies, **options)
