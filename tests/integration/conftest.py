"""Real ``runkernel`` subprocesses on real state dirs, for the kernel's integration tests.

``kernels`` starts ``python manage.py runkernel`` (cwd = the checkout, the kernel-only
Django settings of kernel_settings.py unless FORESIGHT_KERNEL_TEST_SETTINGS says
otherwise), and kills every process it started at teardown, whatever the test did.
:class:`KernelProcess` waits on status.json conditions (never on the clock alone),
sends commands through ``kernel.commands`` exactly as kernelctl does, and reads the
ledger and the paper exchange with plain sqlite3.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel import commands as ctl
from kernel.control import atomic_write_text  # noqa: F401 (tests import it from here)
from kernel.protocol import Command

REPO = Path(__file__).resolve().parents[2]
SETTINGS = os.environ.get("FORESIGHT_KERNEL_TEST_SETTINGS", "tests.integration.kernel_settings")
WAIT_S = 60.0  # generous: conditions, not durations, are what the tests check


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
    env.update(DJANGO_SETTINGS_MODULE=SETTINGS, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def read_json(path: Path) -> dict | None:
    """A whole status.json (it is replaced atomically), or None if there is none yet."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None


class KernelDied(AssertionError):
    pass


class KernelProcess:
    def __init__(self, state_dir: Path, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.args = args
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._n = 0

    # ------------------------------------------------------------ process

    def start(self) -> "KernelProcess":
        cmd = [sys.executable, "manage.py", "runkernel", "--state-dir", str(self.state_dir), *self.args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait(lambda s: s.get("pid") == self.pid and s.get("state") != "starting" and s.get("tick", 0) >= 1,
                  what="the kernel's first status")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = WAIT_S) -> int:
        """SIGTERM: the graceful stop. Returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill9(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        rc = self.proc.wait(WAIT_S)
        self._log.close()
        return rc

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)
        if getattr(self, "_log", None) is not None and not self._log.closed:
            self._log.close()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    # ------------------------------------------------------------ status

    def status(self) -> dict | None:
        """status.json as it is now. The kernel replaces it atomically, so a torn read is a
        kernel bug: it fails the test rather than being retried."""
        return read_json(self.state_dir / "status.json")

    def wait(self, pred: Callable[[dict], Any], timeout: float = WAIT_S, what: str = "a condition",
             poll: float = 0.02) -> dict:
        """The first status.json for which ``pred`` is true; fails if the kernel dies first."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            st = self.status()
            if st is not None:
                last = st
                try:
                    if pred(st):
                        return st
                except (KeyError, IndexError, TypeError, StopIteration):
                    pass
            if not self.alive():
                raise KernelDied(f"kernel exited ({self.proc.returncode}) waiting for {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                brief = {k: last.get(k) for k in ("state", "tick", "control_error", "pending_commands")} if last else None
                raise AssertionError(f"timed out waiting for {what}; last status {brief}\n{self.log_tail(30)}")
            time.sleep(poll)

    def wait_ticks(self, n: int, timeout: float = WAIT_S) -> dict:
        start = self.status()["tick"]
        return self.wait(lambda s: s["tick"] >= start + n, timeout, f"{n} more ticks")

    def slot(self, st: dict, slot_id: str) -> dict:
        return next(s for s in st["slots"] if s["id"] == slot_id)

    # ------------------------------------------------------------ commands

    def new_id(self, prefix: str = "t") -> str:
        self._n += 1
        return f"{prefix}-{os.getpid()}-{self._n}-{time.monotonic_ns()}"

    def send(self, action: str, slot: str | None = None, args: dict | None = None,
             command_id: str | None = None) -> str:
        cmd = ctl.build_command(action, slot, args or {}, command_id=command_id or self.new_id(),
                                issued_by="integration-test")
        ctl.send(self.state_dir, cmd)
        return cmd.id

    def result(self, command_id: str, timeout: float = WAIT_S) -> dict:
        """The kernel's result for a command, from status.json (recent results) or, for an
        older one, from the ledger's commands table."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            for c in (st or {}).get("commands", []):
                if c["id"] == command_id:
                    return c
            rows = self.query("SELECT * FROM commands WHERE id=?", (command_id,))
            if rows:
                row = rows[0]
                row["detail"] = json.loads(row["detail"]) if row["detail"] else None
                return row
            if not self.alive():
                raise KernelDied(f"kernel exited waiting for {command_id}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no result for {command_id}\n{self.log_tail(30)}")
            time.sleep(0.02)

    def call(self, action: str, slot: str | None = None, args: dict | None = None, timeout: float = WAIT_S) -> dict:
        return self.result(self.send(action, slot, args), timeout)

    def ok(self, action: str, slot: str | None = None, args: dict | None = None, timeout: float = WAIT_S) -> dict:
        r = self.call(action, slot, args, timeout)
        assert r["result"] == "applied", r
        return r

    def append(self, commands: list[Command], **kw) -> None:
        from kernel.control import append_commands

        append_commands(self.state_dir, commands, **kw)

    # ------------------------------------------------------------ databases

    def query(self, sql: str, args: tuple = (), db: str = "ledger.sqlite3") -> list[dict]:
        return query(self.state_dir / db, sql, args)


def query(path: Path, sql: str, args: tuple = ()) -> list[dict]:
    if not path.exists():
        return []
    con = sqlite3.connect(path, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args).fetchall()]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        con.close()


def run_python(code: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess:
    """Another process (of the checkout) running ``code``: a writer the kernel does not know."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------ test strategies

FLIP = '''\
"""Integration-test strategy: enters when flat, exits when holding (an order every
cycle), after sleeping ``sleep_ms`` plus a hashed ``jitter_ms`` share of a moment."""
import hashlib
import time

from kernel.strategy_api import Context, Decision, Field, StrategyParams


class Params(StrategyParams):
    sleep_ms: int = Field(0, ge=0)
    jitter_ms: int = Field(0, ge=0)


def warmup(params):
    return 3


def evaluate(ctx: Context) -> Decision:
    p = ctx.params
    if p.sleep_ms or p.jitter_ms:
        h = int(hashlib.blake2b(f"{ctx.slot}|{ctx.now_ms}".encode(), digest_size=4).hexdigest(), 16)
        time.sleep((p.sleep_ms + h % (p.jitter_ms + 1)) / 1000)
    if ctx.position > 0:
        return Decision.exit("flip exit")
    if ctx.entries_allowed:
        return Decision.enter("flip enter")
    return Decision.hold("flip: entries not allowed")
'''

DEMO_ASSETS = ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "AVAX", "LINK")


@pytest.fixture
def strategies_dir(tmp_path: Path) -> Path:
    """A copy of strategies/ (so a test can add and rewrite modules), plus ``flip``."""
    d = tmp_path / "strategies"
    shutil.copytree(REPO / "strategies", d, ignore=shutil.ignore_patterns("__pycache__"))
    (d / "flip.py").write_text(FLIP)
    return d


@pytest.fixture
def kernels(tmp_path: Path) -> Iterator[Callable[..., KernelProcess]]:
    """``start(state_dir=None, *, strategies=None, demo=True, speed=600, tick_ms=100, extra=(), env=None)``
    starts a runkernel and waits for its first status; every kernel started is killed at teardown."""
    started: list[KernelProcess] = []

    def start(state_dir: Path | None = None, *, strategies: Path | None = None, demo: bool = True,
              speed: float = 600, tick_ms: int = 100, extra: tuple[str, ...] | list[str] = (),
              env: dict[str, str] | None = None) -> KernelProcess:
        state_dir = state_dir or tmp_path / "state"
        state_dir.mkdir(parents=True, exist_ok=True)
        args = ["--speed", str(speed), "--tick-ms", str(tick_ms), *extra]
        if demo:
            args.append("--demo")
        if strategies is not None:
            args += ["--strategies-dir", str(strategies)]
        k = KernelProcess(state_dir, args, tmp_path / f"kernel-{len(started)}.log", _env(**(env or {})))
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


def net_fills(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for f in query(path, "SELECT slot, side, qty FROM fills"):
        out[f["slot"]] = out.get(f["slot"], 0.0) + (f["qty"] if f["side"] == "buy" else -f["qty"])
    return out


def ledger_positions(path: Path) -> dict[str, float]:
    return {r["slot"]: r["qty"] for r in query(path, "SELECT slot, qty FROM positions")}
