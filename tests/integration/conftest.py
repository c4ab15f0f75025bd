"""Fixtures for the kernel's integration tests: real ``runkernel`` subprocesses on real state
dirs (tests/support/kernel_process.py), and a temp strategies folder they may rewrite.

``kernels`` kills every kernel it started at teardown, whatever the test did.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kernel.demo import DEMO_ASSETS
from kernel.protocol import Command
from tests.support.kernel_process import KernelProcess, kernel_env, runkernel_args
from tests.support.strategy_folders import copy_repo_strategies
from tests.support.strategy_sources import FLIP


@pytest.fixture
def strategies_dir(tmp_path: Path) -> Path:
    """A copy of strategies/ (so a test can add and rewrite modules), plus ``flip``."""
    return copy_repo_strategies(tmp_path / "strategies", extra={"flip": FLIP})


@pytest.fixture
def kernels(tmp_path: Path) -> Iterator[Callable[..., KernelProcess]]:
    """``start(state_dir=None, *, strategies=None, demo=True, speed=600, tick_ms=100, extra=(), env=None)``
    starts a runkernel and waits for its first status; every kernel started is killed at teardown."""
    started: list[KernelProcess] = []

    def start(state_dir: Path | None = None, *, strategies: Path | None = None, demo: bool = True,
              speed: float = 600, tick_ms: int = 100, extra: tuple[str, ...] | list[str] = (),
              env: dict[str, str] | None = None) -> KernelProcess:
        args = runkernel_args(speed=speed, tick_ms=tick_ms, demo=demo, strategies_dir=strategies, extra=extra)
        k = KernelProcess(state_dir or tmp_path / "state", args, env=kernel_env(**(env or {})),
                          log_path=tmp_path / f"kernel-{len(started)}.log")
        started.append(k)
        return k.start()

    yield start
    for k in started:
        k.cleanup()


def add_flip_slots(k: KernelProcess, n: int = 8, timeframe: str = "5m", **params: int) -> list[str]:
    """``n`` slots (one per demo asset, then a second round) trading ``flip``, added in one write."""
    cmds, ids = [], []
    for i in range(n):
        asset = DEMO_ASSETS[i % len(DEMO_ASSETS)]
        slot = f"{asset.lower()}-{timeframe}" + (f"-{i // len(DEMO_ASSETS)}" if i >= len(DEMO_ASSETS) else "")
        ids.append(slot)
        cmds.append(Command(id=k.new_id("add"), action="slot.add", slot=slot, args={
            "id": slot, "symbol": f"{asset}/USDT", "timeframe": timeframe, "strategy": "flip",
            "params": dict(params), "order_notional": 500.0, "max_notional": 2000.0}))
    k.append(cmds)
    for c in cmds:
        r = k.result(c.id)
        assert r["result"] == "applied", r
    return ids
