"""Foresight and freqtrade side by side on one loopback fake Binance: deploy blind window, API
failure time during a deploy, and RSS (and its growth over reloads).

Both trade for real (freqtrade with ``dry_run: false``) through ccxt's binance class against the
fake spot exchange of tests/support/fake_binance.py on a loopback socket, the same 8 pairs on
1m candles at the wall clock, one after the other (never at once: two bots on 2 cores would
measure each other), each with a fresh exchange (1,000,000 USDT, the same candles, prices at
the last close). The strategy is the same flip-flop on both: the kernel's flipflop test
strategy (an order at every close) and bench/peer_config/FlipFlop.py (enter on an even
minute, exit on the next).

For each bot:

- *hot deploy*: Foresight: the strategy file rewritten + a ``reload`` command (kernelctl's way),
  waited for in status.json; freqtrade: ``POST /api/v1/reload_config`` (its only in-process
  deploy: the bot is torn down and built again from its config), waited for until
  ``/api/v1/show_config`` says ``running``. The *blind window* is the time the bot could not act
  on a candle: Foresight's cycles keep running on the old module until the swap, and the swap
  holds the reload lock for microseconds (the reload's ``lock_wait_ms`` and the longest
  ``cycles.lock_wait_us`` during the reloads, from the kernel's own measures); freqtrade's bot
  loop is stopped from the POST until it runs again;
- *restart*: SIGTERM, then the same command again on the same state (Foresight: state dir;
  freqtrade: its sqlite DB), until the status endpoint answers ``running`` for the new process;
- *API failure time*: a thread polls each bot's status endpoint every 10 ms during the whole
  deploy (Foresight: status.json read and parsed, ``state == "running"``, as the console's status
  API serves it; freqtrade: ``GET /api/v1/status`` with basic auth, HTTP 200). A poll fails if
  it cannot read/parse, gets no 200, or the bot is not running; the time from the first failed
  poll to the next good one, summed over the deploy;
- *RSS*: VmRSS of the bot's process tree (``/proc``), after warm-up, and after N hot deploys.

freqtrade is installed (``pip install freqtrade==FREQTRADE_VERSION``) into its own venv,
bench/.peer-venv/, only when ``--peer freqtrade`` is given; without it only Foresight runs.

    .venv/bin/python -m bench.peer_freqtrade --peer freqtrade            # 30 reloads, 3 restarts each
    .venv/bin/python -m bench.peer_freqtrade --quick --peer freqtrade    # 5 reloads, 1 restart each
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import requests

from bench.harness import emit, format_table, log, machine_info, make_temp_dir, stats
from kernel.control import append_commands, atomic_write_text
from kernel.control_client import build_command
from kernel.exchange_client import override_api_url
from kernel.feeds.synthetic import SyntheticFeed
from kernel.protocol import SlotConfig
from tests.support.checkout import REPO
from tests.support.fake_binance import TEST_KEY, TEST_SECRET, FakeBinanceServer
from tests.support.kernel_process import KernelProcess, kernel_env
from tests.support.ledger_reader import sqlite_rows
from tests.support.ports import free_port
from tests.support.processes import kill_group, spawn
from tests.support.slot_seeds import seed_slots
from tests.support.status_reader import StatusReader, done_ids, read_status
from tests.support.strategy_folders import write_strategies
from tests.support.strategy_sources import FLIPFLOP
from tests.support.waiting import wait_until

NAME = "peer_freqtrade"
PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT", "DOGE/USDT", "AVAX/USDT", "LINK/USDT"]
MINUTE = 60_000
POLL_S = 0.010
PEER_VENV = REPO / "bench" / ".peer-venv"
PEER_CONFIG = REPO / "bench" / "peer_config"
FREQTRADE_VERSION = "2026.9"
FT_AUTH = ("bench", "bench")


# ---------------------------------------------------------------------- measuring


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` and all its descendants, in MB (None once it is gone)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo, seen = 0, [pid], False
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    seen = True
        except OSError:
            pass
    return round(total / 1024, 1) if seen else None


class Poller(threading.Thread):
    """Calls ``probe`` every 10 ms; keeps (monotonic s, ok) of every poll."""

    def __init__(self, probe: Callable[[], bool]) -> None:
        super().__init__(daemon=True, name="status-poller")
        self.probe = probe
        self.samples: list[tuple[float, bool]] = []
        self._quit = threading.Event()

    def run(self) -> None:
        while not self._quit.is_set():
            t = time.monotonic()
            try:
                ok = bool(self.probe())
            except Exception:  # noqa: BLE001 - any failure to answer is what is measured
                ok = False
            self.samples.append((t, ok))
            self._quit.wait(max(0.0, POLL_S - (time.monotonic() - t)))

    def stop(self) -> None:
        self._quit.set()
        self.join(5)

    def failure_ms(self, t0: float, t1: float) -> float:
        """Time from each failed poll in [t0, t1] to the next good one (or t1), summed."""
        total, fail_at = 0.0, None
        for t, ok in list(self.samples):
            if t < t0 or t > t1:
                continue
            if not ok and fail_at is None:
                fail_at = t
            elif ok and fail_at is not None:
                total += t - fail_at
                fail_at = None
        if fail_at is not None:
            total += t1 - fail_at
        return round(total * 1000, 1)

    def polls(self, t0: float, t1: float) -> int:
        return sum(1 for t, _ in list(self.samples) if t0 <= t <= t1)


def fake_exchange() -> FakeBinanceServer:
    """The 8 pairs' 1m candles from 400 minutes ago to 3 hours ahead (the fake serves only
    those opened by its wall clock, so new candles close as time passes)."""
    now = time.time_ns() // 1_000_000
    ex = FakeBinanceServer(balances={"USDT": 1_000_000.0}).start()
    feed = SyntheticFeed(7)
    for pair in PAIRS:
        candles = feed.candles(pair, "1m", now - now % MINUTE + 180 * MINUTE, 580)
        ex.add_candles(pair.replace("/", ""), "1m", candles)
        ex.exchange.prices[pair.replace("/", "")] = round(candles[400].close, 6)
    return ex


def deploys_summary(events: list[dict], kind: str) -> dict:
    ev = [e for e in events if e["kind"] == kind]
    keys = ("blind_window_ms", "round_trip_ms", "api_failure_ms")
    out = {k: stats([e.get(k) for e in ev], 1) for k in keys}
    out["deploys"] = len(ev)
    out["polls"] = sum(e["polls"] for e in ev)
    return out


# ---------------------------------------------------------------------- Foresight


def ledger_orders(ledger: Path) -> int:
    return sqlite_rows(ledger, "SELECT COUNT(*) AS n FROM orders WHERE filled_qty > 0")[0]["n"]


def run_foresight(*, reloads: int, restarts: int, spacing_s: float, warm_s: float, keep: bool,
                  trade_timeout_s: float | None = 150.0, align_to_close: bool = True) -> dict:
    """The Foresight half; with ``trade_timeout_s``, it also waits (that long at most) until an
    order has filled, so that the run is one during which the strategy traded. With
    ``align_to_close`` the hot reloads run back to back from just before a candle close, so that
    the close's cycles start while reloads are in flight (else, one close a minute, few would)."""
    tmp = make_temp_dir("fs-bench-peer-foresight-")
    state, strategies = tmp / "state", write_strategies(tmp / "strategies", {"flipflop": FLIPFLOP})
    target = strategies / "flipflop.py"
    seed_slots(state, [SlotConfig(id=f"{p.split('/')[0].lower()}-1m", symbol=p, timeframe="1m", strategy="flipflop",
                                  order_notional=100.0) for p in PAIRS])
    ex = fake_exchange()
    args = ["--feed", "ccxt", "--broker", "ccxt", "--exchange", "binance", "--exchange-url", ex.url,
            "--strategies-dir", str(strategies), "--tick-ms", "100"]
    env = kernel_env(FORESIGHT_BINANCE_API_KEY=TEST_KEY, FORESIGHT_BINANCE_SECRET=TEST_SECRET)

    def new_kernel() -> KernelProcess:
        return KernelProcess(state, args, launcher="direct", env=env)

    log(f"foresight: python -m kernel --feed ccxt --broker ccxt on {ex.url}, state {state}")
    kernel = new_kernel().start(timeout=120, ready=lambda s: s.get("state") == "running")
    poller = Poller(lambda: (read_status(state) or {}).get("state") == "running")
    poller.start()
    reader = StatusReader(state, force_s=0.05)
    events: list[dict] = []
    try:
        time.sleep(warm_s)
        rss0 = rss_mb(kernel.pid)
        gap_s = spacing_s
        if align_to_close:
            lead, now = min(1.0, 0.05 * reloads), time.time()
            close = (now // 60 + 1) * 60
            close += 60 if close - now < lead + 0.5 else 0
            log(f"foresight: {reloads} hot reloads back to back from {lead:g} s before the close at "
                f"{time.strftime('%H:%M:%S', time.gmtime(close))}")
            time.sleep(close - lead - now)
            gap_s = 0.0
        last = reader.read()
        reload_windows = []
        for i in range(reloads):
            atomic_write_text(target, FLIPFLOP + f"\n# bench deploy {i}\n")
            cmd = build_command("reload", args={"strategy": "flipflop"}, issued_by="bench")
            t0, w0 = time.monotonic(), time.time_ns() // 1_000_000
            append_commands(state, [cmd], prune_ids=done_ids(last))
            res, last, _ = reader.wait_command(cmd.id, timeout=60, abort=kernel.check_alive)
            t1, w1 = time.monotonic(), time.time_ns() // 1_000_000
            per = ((res.get("detail") or {}).get("strategies") or [{}])[0]
            reload_windows.append((w0, w1))
            events.append({"kind": "hot_reload", "result": per.get("result") or res.get("result"),
                           "round_trip_ms": round((t1 - t0) * 1000, 1),
                           "swap_lock_wait_ms": per.get("lock_wait_ms"),
                           "api_failure_ms": poller.failure_ms(t0, t1), "polls": poller.polls(t0, t1)})
            time.sleep(gap_s)
        rss1 = rss_mb(kernel.pid)
        for _ in range(restarts):
            t0 = time.monotonic()
            kernel.stop()
            kernel = new_kernel().start(wait=False)
            pid = kernel.pid
            reader.wait(lambda s: s.get("pid") == pid and s.get("state") == "running", timeout=120,
                        abort=kernel.check_alive, what="the restarted kernel running")
            t1 = time.monotonic()
            events.append({"kind": "restart", "blind_window_ms": round((t1 - t0) * 1000, 1),
                           "round_trip_ms": round((t1 - t0) * 1000, 1),
                           "api_failure_ms": poller.failure_ms(t0, t1), "polls": poller.polls(t0, t1)})
            time.sleep(spacing_s)
        rss_restarted = rss_mb(kernel.pid)
        if trade_timeout_s:  # traded: the first close's orders, if the run was shorter than a minute
            wait_until(lambda: ledger_orders(state / "ledger.sqlite3") > 0, timeout=trade_timeout_s,
                       what="an order filled", abort=kernel.check_alive)
    finally:
        poller.stop()
        kernel.stop()
        ex.stop()
    ledger = state / "ledger.sqlite3"
    cycles = sqlite_rows(ledger, "SELECT started_ms, lock_wait_us FROM cycles WHERE started_ms IS NOT NULL")
    in_reload = []
    hot = [e for e in events if e["kind"] == "hot_reload"]
    for e, (a, b) in zip(hot, reload_windows):
        # The kernel's own measure: the longest a cycle that started during the reload waited on
        # the reload lock (µs resolution). A reload no cycle started in shows nothing: not counted.
        waits = [c["lock_wait_us"] or 0 for c in cycles if a <= c["started_ms"] <= b]
        in_reload += waits
        e["cycles_in_window"] = len(waits)
        e["blind_window_ms"] = max(waits) / 1000.0 if waits else None
    orders = sqlite_rows(ledger, "SELECT status FROM orders")
    filled = ledger_orders(ledger)
    out = {"bot": "foresight", "status_endpoint": "status.json (read + parse, state running)",
           "rss_mb": rss0, "rss_after_reloads_mb": rss1, "rss_after_restarts_mb": rss_restarted,
           "rss_growth_per_reload_mb": round((rss1 - rss0) / reloads, 3) if reloads and rss0 and rss1 else None,
           "hot_reload": deploys_summary(events, "hot_reload"), "restart": deploys_summary(events, "restart"),
           "cycles_during_reloads": len(in_reload),
           "reloads_with_a_cycle": sum(1 for e in hot if e["cycles_in_window"]), "max_cycle_lock_wait_us_during_reloads": max(in_reload, default=0),
           "reload_results": sorted({str(e.get("result")) for e in events if e["kind"] == "hot_reload"}),
           "orders": len(orders), "filled_orders": filled, "exchange_orders": len(ex.exchange.orders),
           "events": events}
    if keep:
        out["dir"] = str(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------- freqtrade


def ensure_freqtrade() -> tuple[Path | None, str]:
    """bench/.peer-venv/bin/freqtrade, installing it first if missing; or (None, why not)."""
    exe = PEER_VENV / "bin" / "freqtrade"
    if not exe.exists():
        log(f"installing freqtrade=={FREQTRADE_VERSION} into {PEER_VENV} (a few minutes)")
        for cmd in ([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)],
                    [str(PEER_VENV / "bin" / "pip"), "install", "-q", f"freqtrade=={FREQTRADE_VERSION}"]):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                return None, f"{' '.join(cmd[-3:])} failed: {(done.stderr or done.stdout).strip()[-800:]}"
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return None, f"freqtrade --version failed: {done.stderr.strip()[-800:]}"
    return exe, done.stdout.strip().split()[-1]  # "Freqtrade Version: freqtrade 2026.9"


class Freqtrade:
    """One freqtrade bot (``freqtrade trade``) in a session of its own, on a dir, via its REST API."""

    def __init__(self, exe: Path, root: Path, ex: FakeBinanceServer) -> None:
        self.exe, self.root, self.port = exe, root, free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        self.session = requests.Session()
        self.session.auth = FT_AUTH
        cfg = json.loads((PEER_CONFIG / "config.json").read_text())
        cfg = {k: v for k, v in cfg.items() if not k.startswith("//")}
        import ccxt  # the same version as the peer's (both pinned by their installs): its binance URLs

        cfg["exchange"].update(key=TEST_KEY, secret=TEST_SECRET, pair_whitelist=PAIRS)
        cfg["exchange"]["ccxt_config"]["urls"] = {"api": override_api_url(ccxt.binance(), ex.url)}
        cfg["api_server"]["listen_port"] = self.port
        cfg.update(db_url=f"sqlite:///{root / 'trades.sqlite'}", user_data_dir=str(root / "user_data"),
                   strategy_path=str(PEER_CONFIG))
        (root / "user_data").mkdir(parents=True, exist_ok=True)
        self.config = root / "config.json"
        self.config.write_text(json.dumps(cfg, indent=1))
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "Freqtrade":
        self.starts += 1
        self.proc = spawn([str(self.exe), "trade", "-c", str(self.config), "--userdir", str(self.root / "user_data")],
                          env=dict(os.environ, PYTHONUNBUFFERED="1"), log_path=self.root / f"freqtrade-{self.starts}.log")
        return self

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"freqtrade exited ({self.proc and self.proc.returncode}): see {self.root}")

    def filled_orders(self) -> int:
        with sqlite3.connect(f"file:{self.root / 'trades.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM orders WHERE status = 'closed'").fetchone()[0]

    def state(self) -> str | None:
        r = self.session.get(f"{self.api}/show_config", timeout=1)
        return r.json().get("state") if r.status_code == 200 else None

    def status_ok(self) -> bool:
        return self.session.get(f"{self.api}/status", timeout=1).status_code == 200

    def wait_running(self, timeout: float = 180) -> None:
        def running() -> bool:
            try:
                return self.state() == "running"
            except requests.RequestException:
                return False
        wait_until(running, timeout=timeout, what="freqtrade running", abort=self.check_alive, poll=0.005)

    def wait_reloaded(self, timeout: float = 180) -> tuple[float, float]:
        """After a reload_config: when the bot was first seen not running (its loop stopped: the
        worker picks the request up at its next loop) and when it runs again (monotonic s)."""
        deadline, switched = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            state, now = _safe(self.state), time.monotonic()
            if state != "running" and switched is None:
                switched = now
            elif state == "running" and switched is not None:
                return switched, now
            self.check_alive()
            time.sleep(0.005)
        raise AssertionError(f"freqtrade did not reload within {timeout} s: see {self.root}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)


def run_freqtrade(exe: Path, *, reloads: int, restarts: int, spacing_s: float, warm_s: float, keep: bool) -> dict:
    tmp = make_temp_dir("fs-bench-peer-freqtrade-")
    ex = fake_exchange()
    bot = Freqtrade(exe, tmp, ex)
    log(f"freqtrade: dry_run false, ccxt binance urls -> {ex.url}, dir {tmp}")
    bot.start().wait_running()
    poller = Poller(bot.status_ok)
    poller.start()
    events: list[dict] = []
    try:
        time.sleep(warm_s)
        rss0 = rss_mb(bot.proc.pid)
        for _ in range(reloads):
            t0 = time.monotonic()
            r = bot.session.post(f"{bot.api}/reload_config", timeout=30)
            r.raise_for_status()
            switched, t1 = bot.wait_reloaded()
            events.append({"kind": "hot_reload", "blind_window_ms": round((t1 - switched) * 1000, 1),
                           "round_trip_ms": round((t1 - t0) * 1000, 1),
                           "api_failure_ms": poller.failure_ms(t0, t1), "polls": poller.polls(t0, t1)})
            time.sleep(spacing_s)
        rss1 = rss_mb(bot.proc.pid)
        for _ in range(restarts):
            t0 = time.monotonic()
            bot.stop()
            bot.start().wait_running()
            t1 = time.monotonic()
            events.append({"kind": "restart", "blind_window_ms": round((t1 - t0) * 1000, 1),
                           "round_trip_ms": round((t1 - t0) * 1000, 1),
                           "api_failure_ms": poller.failure_ms(t0, t1), "polls": poller.polls(t0, t1)})
            time.sleep(spacing_s)
        rss_restarted = rss_mb(bot.proc.pid)
        wait_until(lambda: bot.filled_orders() > 0, timeout=150, what="an order filled", abort=bot.check_alive)
    finally:
        poller.stop()
        bot.stop()
        ex.stop()
    with sqlite3.connect(tmp / "trades.sqlite") as db:
        orders = db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    filled = bot.filled_orders()
    out = {"bot": "freqtrade", "status_endpoint": "GET /api/v1/status (basic auth, HTTP 200)",
           "rss_mb": rss0, "rss_after_reloads_mb": rss1, "rss_after_restarts_mb": rss_restarted,
           "rss_growth_per_reload_mb": round((rss1 - rss0) / reloads, 3) if reloads and rss0 and rss1 else None,
           "hot_reload": deploys_summary(events, "hot_reload"), "restart": deploys_summary(events, "restart"),
           "orders": orders, "filled_orders": filled, "exchange_orders": len(ex.exchange.orders), "events": events}
    if keep:
        out["dir"] = str(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _safe(fn: Callable[[], str | None]) -> str | None:
    try:
        return fn()
    except requests.RequestException:
        return None


# ---------------------------------------------------------------------- the table


def ratio(a: float | None, b: float | None, floor: float = 0.0) -> float | None:
    if a is None or b is None:
        return None
    return round(a / max(b, floor), 1) if max(b, floor) > 0 else None


def table(fs: dict, ft: dict | None, why_not: str | None) -> str:
    def p50(bot: dict | None, kind: str, key: str) -> float | None:
        return bot[kind][key]["p50"] if bot else None

    rows = []
    # (what, foresight value, freqtrade value, floor of foresight's value for the ratio)
    for what, kind, key, floor in (("hot deploy blind window ms p50", "hot_reload", "blind_window_ms", 0.001),
                                   ("hot deploy round trip ms p50", "hot_reload", "round_trip_ms", 0.0),
                                   ("hot deploy API failure ms p50", "hot_reload", "api_failure_ms", POLL_S * 1000),
                                   ("restart blind window ms p50", "restart", "blind_window_ms", 0.0),
                                   ("restart API failure ms p50", "restart", "api_failure_ms", POLL_S * 1000)):
        a, b = p50(fs, kind, key), p50(ft, kind, key)
        r = ratio(b, a, floor)
        # Foresight's value below the floor (1 µs, one poll): the ratio is a lower bound
        rows.append([what, a, b if ft else "not measured", f">{r:,.0f}" if r is not None and a < floor else r])
    for what, key in (("RSS MB", "rss_mb"), ("RSS growth MB per reload", "rss_growth_per_reload_mb")):
        a, b = fs[key], ft[key] if ft else None
        rows.append([what, a, b if ft else "not measured", ratio(b, a) if key == "rss_mb" else None])
    rows.append(["hot deploys with a cycle in them", f"{fs['reloads_with_a_cycle']} of {fs['hot_reload']['deploys']}",
                 "every one (the bot loop stops)" if ft else "-", None])
    rows.append(["orders at the exchange", fs["exchange_orders"], ft["exchange_orders"] if ft else "-", None])
    out = format_table(["", "foresight", "freqtrade", "freqtrade / foresight"], rows)
    return out + (f"\n\nfreqtrade not measured: {why_not}" if ft is None and why_not else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", choices=["none", "freqtrade"], default="none",
                   help="freqtrade: install it into bench/.peer-venv/ if missing and run it too")
    p.add_argument("--reloads", type=int, default=None, help="hot deploys per bot (default 30; 5 with --quick)")
    p.add_argument("--restarts", type=int, default=None, help="restarts per bot (default 3; 1 with --quick)")
    p.add_argument("--spacing", type=float, default=1.0, help="seconds between deploys")
    p.add_argument("--warm-s", type=float, default=None, help="seconds running before the first deploy (10; 3 quick)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (state, logs, DBs)")
    p.add_argument("--name", default=None)
    a = p.parse_args(argv)
    reloads = a.reloads if a.reloads is not None else (5 if a.quick else 30)
    restarts = a.restarts if a.restarts is not None else (1 if a.quick else 3)
    warm_s = a.warm_s if a.warm_s is not None else (3.0 if a.quick else 10.0)
    name = a.name or (f"{NAME}_quick" if a.quick else NAME)
    machine = machine_info()
    kw = dict(reloads=reloads, restarts=restarts, spacing_s=a.spacing, warm_s=warm_s, keep=a.keep)
    fs = run_foresight(**kw)
    ft, why_not, version = None, None, None
    if a.peer == "freqtrade":
        exe, version = ensure_freqtrade()
        if exe is None:
            why_not, version = version, None
            log(f"freqtrade not measured: {why_not}")
        else:
            ft = run_freqtrade(exe, **kw)
    else:
        why_not = "not asked (--peer freqtrade)"

    def brief(bot: dict | None) -> dict | None:
        return None if bot is None else {k: v for k, v in bot.items() if k != "events"}

    summary = {"pairs": len(PAIRS), "timeframe": "1m", "reloads": reloads, "restarts": restarts,
               "foresight": brief(fs), "freqtrade": brief(ft), "freqtrade_version": version,
               "freqtrade_not_measured": why_not if ft is None else None,
               "freqtrade_mode": "dry_run false against the fake exchange" if ft else None,
               "ratio_freqtrade_over_foresight": {
                   "hot_deploy_blind_window_p50": ratio(ft["hot_reload"]["blind_window_ms"]["p50"],
                                                        fs["hot_reload"]["blind_window_ms"]["p50"], 0.001) if ft else None,
                   "hot_deploy_api_failure_p50": ratio(ft["hot_reload"]["api_failure_ms"]["p50"],
                                                       fs["hot_reload"]["api_failure_ms"]["p50"], POLL_S * 1000) if ft else None,
                   "restart_blind_window_p50": ratio(ft["restart"]["blind_window_ms"]["p50"],
                                                     fs["restart"]["blind_window_ms"]["p50"]) if ft else None,
                   "rss": ratio(ft["rss_mb"], fs["rss_mb"]) if ft else None}}
    emit(name, {"summary": summary, "machine": machine,
                "events": {"foresight": fs["events"], "freqtrade": ft["events"] if ft else []}},
         ["Foresight and freqtrade on one loopback fake Binance, 8 pairs, 1m (ms, wall clock; ratios floor "
          "Foresight's blind window at 1 µs and its API failure at one 10 ms poll)\n\n" + table(fs, ft, why_not)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
