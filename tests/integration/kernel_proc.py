"""Helpers for tests that run the real ``manage.py runkernel`` in a subprocess.

The kernel runs under ``tests.integration.kernel_settings`` (Django with the kernel app
only): it needs no database and no console app.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from kernel.feeds.replay import export_synthetic
from kernel.ledger import Ledger
from kernel.versions import StrategyLoader
from kernel.protocol import SlotConfig

REPO = Path(__file__).resolve().parents[2]

FLIPFLOP = '''"""Test strategy: enter when flat, exit when holding, at every candle."""
from kernel.strategy_api import Context, Decision, StrategyParams


class Params(StrategyParams):
    pass


def warmup(params: Params) -> int:
    return 2


def evaluate(ctx: Context) -> Decision:
    if ctx.position > 0:
        return Decision.exit("flip")
    if ctx.entries_allowed:
        return Decision.enter("flop")
    return Decision.hold("entries not allowed")
'''


def write_strategies(folder: Path, *, with_repo: Iterable[str] = ()) -> Path:
    """A strategies folder with ``flipflop`` and copies of the named repo strategies."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flipflop.py").write_text(FLIPFLOP)
    for name in with_repo:
        (folder / f"{name}.py").write_text((REPO / "strategies" / f"{name}.py").read_text())
    if with_repo:
        # The helpers the repo's strategies import (indicators, state, ...): every module of
        # strategies/ that is not itself a strategy.
        strategies = set(StrategyLoader(REPO / "strategies").available())
        for path in (REPO / "strategies").glob("*.py"):
            if path.stem not in strategies and path.name != "__init__.py":
                (folder / path.name).write_text(path.read_text())
    return folder


def write_slots(state_dir: Path, configs: Iterable[SlotConfig]) -> None:
    """Slots a kernel finds at its first start (as if added earlier)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(state_dir / "ledger.sqlite3")
    try:
        ledger.add_slots([c.model_dump(mode="json") for c in configs])
    finally:
        ledger.close()


def write_candles(folder: Path, symbols: list[str], timeframes: list[str], start_ms: int, hours: float,
                  seed: int = 7) -> Path:
    export_synthetic(folder, symbols, timeframes, start_ms, start_ms + int(hours * 3_600_000), seed=seed)
    return folder


def kernel_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
    env["DJANGO_SETTINGS_MODULE"] = "tests.integration.kernel_settings"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def start_kernel(state_dir: Path, *args: str, env: dict[str, str] | None = None,
                 log_path: Path | None = None) -> subprocess.Popen:
    log = open(log_path or (state_dir / "kernel.log"), "ab")
    try:
        return subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "runkernel", "--state-dir", str(state_dir), *args],
            cwd=str(REPO), env=env or kernel_env(), stdout=log, stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def wait_exit(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"kernel pid {proc.pid} still running after {timeout}s: killed")


def stop_kernel(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return wait_exit(proc, timeout)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rows(db_path: Path, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
    """Query a kernel or paper-exchange SQLite file (its WAL included) once no kernel runs on it."""
    db = sqlite3.connect(str(db_path))
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, args).fetchall()]
    finally:
        db.close()
