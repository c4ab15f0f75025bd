"""Scale: the most slots one kernel holds while its cycles start within 1 s of their candle close,
with the strategies trading.

For each strategy (``hold``: a trivial strategy that returns ``hold`` at once, written into a
temp copy of strategies/, the baseline; then each shipped one: ema_cross, rsi_reversion,
breakout), a search over slot counts: doubling from ``--start`` until a run fails, then
bisecting between the last pass and the first failure until they are within ``--precision``
(12.5 % by default).

Trading (the default; ``--no-trading`` runs the shipped defaults, which rarely trade in a
short run): each shipped strategy gets parameters that make it enter and exit within a few
candles of the synthetic feed (``TRADING_PARAMS``: 2–3 bar indicators, a 2-bar holding limit,
a 0.1 % trailing stop), so entries and exits happen during the measurement. The orders and
fills are counted from the ledger (orders created while the kernel ran, wall clock), with the
orders per second reached.

One run: a fresh temp state dir whose ``N`` slots (all on the strategy; 8 assets, 5m and 15m
alternating, as the reference deployment) are written **before the kernel starts**, with the
kernel's own ``Ledger.add_slots``; a real kernel (``python -m kernel``, the runkernel command
without Django; ``--launcher runkernel`` for manage.py) at ``--speed`` 150 (a 5m close every
2 s of wall time, a 15m close, when all N slots are due at once, every 6 s), ``--tick-ms`` 100,
8 workers; it runs for ``--closes`` 15m closes (2 by default: about 14 s) after it says
running, then gets SIGTERM and its ledger is read.

A run **passes** when the p99 of the cycles' start lag in wall-clock terms
(``cycles.lag_ms`` / speed: from the candle close to the moment a worker started the cycle)
is at most 1,000 ms, no cycle was missed (status.json ``cycles.missed``) and, for a shipped
strategy in trading mode, both entries and exits were filled during the run. At speed 150 a
burst has 2 s before the next close; a burst that passes (p99 under 1 s) fits well inside it,
so the speed does not change what a burst costs, only how often one comes.

    .venv/bin/python -m bench.scale                  # all four strategies, trading
    .venv/bin/python -m bench.scale --quick          # the shipped three at 1,250, 2,500, 5,000
    .venv/bin/python -m bench.scale --strategies hold --start 1000
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from bench.harness import (
    LAUNCHERS,
    bench_kernel,
    effective_tick_ms,
    emit,
    format_table,
    log,
    machine_info,
    make_temp_dir,
    start_running,
    stats,
)
from kernel.demo import DEMO_ASSETS, DEMO_TIMEFRAMES
from kernel.protocol import SlotConfig
from tests.support.ledger_reader import ledger_rows
from tests.support.slot_seeds import seed_slots
from tests.support.status_reader import StatusReader
from tests.support.strategy_folders import copy_repo_strategies
from tests.support.strategy_sources import HOLD

NAME = "scale"
LAG_LIMIT_MS = 1000.0
TARGET_SLOTS = 5000
SHIPPED = ("ema_cross", "rsi_reversion", "breakout")
# Parameters that make each shipped strategy enter and leave within a few candles of the
# synthetic feed (checked by the run: entries and exits counted from the ledger).
TRADING_PARAMS: dict[str, dict] = {
    "ema_cross": {"fast": 2, "slow": 3, "max_bars_held": 2},
    "rsi_reversion": {"period": 2, "oversold": 45.0, "overbought": 55.0, "max_bars_held": 2},
    "breakout": {"lookback": 2, "trail_pct": 0.001},
}


def seed(state: Path, n: int, strategy: str, params: dict | None = None) -> None:
    """``n`` slots all on ``strategy``: the 8 demo assets, 5m and 15m alternating."""
    configs = []
    for i in range(n):
        asset = DEMO_ASSETS[(i // len(DEMO_TIMEFRAMES)) % len(DEMO_ASSETS)]
        tf = DEMO_TIMEFRAMES[i % len(DEMO_TIMEFRAMES)]
        configs.append(SlotConfig(id=f"{asset.lower()}-{tf}-{i:05d}", symbol=f"{asset}/USDT", timeframe=tf,
                                  strategy=strategy, params=dict(params or {}), order_notional=500.0,
                                  max_notional=2_000.0))
    seed_slots(state, configs)


def trading_counts(state: Path, since_ms: int, until_ms: int) -> dict:
    """Orders created (wall clock) in [since_ms, until_ms] and their fills, from the ledger."""
    orders = ledger_rows(state, "SELECT client_order_id, intent, status, candle_ms, created_ms FROM orders"
                         " WHERE created_ms BETWEEN ? AND ?", (since_ms, until_ms))
    ids = {o["client_order_id"] for o in orders}
    fills = [f for f in ledger_rows(state, "SELECT client_order_id FROM fills") if f["client_order_id"] in ids]
    filled = {f["client_order_id"] for f in fills}
    window_s = max((until_ms - since_ms) / 1000.0, 1e-9)
    # The busiest close: its orders, and the rate they were written at (first to last intent).
    by_close: dict[int, list[int]] = {}
    for o in orders:
        by_close.setdefault(o["candle_ms"], []).append(o["created_ms"])
    burst = max(by_close.values(), key=len, default=[])
    span_s = (max(burst) - min(burst)) / 1000.0 if len(burst) > 1 else 0.0
    return {
        "burst_orders": len(burst), "burst_span_s": round(span_s, 2),
        "burst_orders_per_s": round(len(burst) / span_s) if span_s > 0 else None,
        "orders": len(orders), "fills": len(fills),
        "entries_filled": sum(1 for o in orders if o["intent"] == "entry" and o["client_order_id"] in filled),
        "exits_filled": sum(1 for o in orders if o["intent"] == "exit" and o["client_order_id"] in filled),
        "refused": sum(1 for o in orders if o["status"] == "refused"),
        "unfinished": sum(1 for o in orders if o["status"] in ("intent", "sent", "open")),
        "window_s": round(window_s, 1), "orders_per_s": round(len(orders) / window_s, 1),
    }


def intent_commit_rate(*, threads: int = 8, per_thread: int = 150) -> dict:
    """The order path's first write on its own: ``threads`` workers (the kernel's default pool)
    recording intents at once, one commit each (``Ledger.record_intent``) against the group
    commit (kernel/intent_batch.py), on a fresh ledger in a temp dir."""
    import threading

    from kernel.intent_batch import Intent, IntentBatch
    from kernel.ledger import Ledger

    out = {}
    for mode in ("one commit per intent", "group commit"):
        tmp = make_temp_dir("fs-bench-scale-intents-")
        ledger = Ledger(tmp / "ledger.sqlite3")
        batch = IntentBatch(ledger)

        def work(t: int) -> None:
            for i in range(per_thread):
                kw = dict(client_order_id=f"fs{t:04d}{i:028d}", slot=f"s{t}", symbol="BTC/USDT", candle_ms=i,
                          intent="entry", side="buy", qty=1.0, ref_price=1.0)
                if mode == "group commit":
                    batch.record(Intent(**kw))
                else:
                    ledger.record_intent(**kw)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - t0
        n = threads * per_thread
        commits = batch.commits if mode == "group commit" else n
        out[mode] = {"intents": n, "intents_per_s": round(n / wall), "commits": commits,
                     "intents_per_commit": round(n / commits, 2)}
        ledger.close()
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"intents: {out}")
    return out


def run_one(n: int, strategy: str, strat_dir: Path, *, speed: float, tick_ms: int, closes: int,
            launcher: str, keep: bool, trading: bool = True) -> dict:
    tmp = make_temp_dir(f"fs-bench-scale-{strategy}-{n}-")
    state = tmp / "state"
    state.mkdir()
    t0 = time.monotonic()
    params = TRADING_PARAMS.get(strategy) if trading else None
    load_start = round(os.getloadavg()[0], 2)
    seed(state, n, strategy, params)
    kernel = bench_kernel(state, speed=speed, tick_ms=tick_ms, strategies_dir=strat_dir, cash=1e12,
                          launcher=launcher)
    t_boot = time.monotonic()
    first = start_running(kernel, timeout=300)
    boot_s = time.monotonic() - t_boot
    run_wall_s = closes * 900.0 / speed + 1.5
    since_ms = time.time_ns() // 1_000_000
    try:
        time.sleep(run_wall_s)
        last = StatusReader(state).read()
        kernel.check_alive()
    finally:
        until_ms = time.time_ns() // 1_000_000
        rc = kernel.stop(timeout=120)
    load_end = round(os.getloadavg()[0], 2)
    trades = trading_counts(state, since_ms, until_ms)
    final = StatusReader(state).read() or {}
    rows = ledger_rows(state, "SELECT candle_ms, lag_ms, duration_us, result FROM cycles")
    lags = [r["lag_ms"] / speed for r in rows if r["lag_ms"] is not None]
    bursts: dict[int, list[float]] = {}
    for r in rows:
        if r["lag_ms"] is not None:
            bursts.setdefault(r["candle_ms"], []).append(r["lag_ms"] / speed)
    full = [max(v) for k, v in bursts.items() if len(v) > n * 0.75]  # the 15m closes: all slots at once
    totals = final.get("cycles") or {}
    lag = stats(lags, 1)
    traded = trades["entries_filled"] > 0 and trades["exits_filled"] > 0
    must_trade = trading and strategy in TRADING_PARAMS
    ok = (bool(lags) and lag["p99"] <= LAG_LIMIT_MS and int(totals.get("missed") or 0) == 0
          and (traded or not must_trade))
    res = {
        "slots": n, "strategy": strategy, "params": params or {}, "pass": ok, "traded": traded,
        "trading": trades, "loadavg_1m": [load_start, load_end], "cycles": len(rows),
        "lag_wall_ms": lag, "full_burst_last_start_ms": stats(full, 1),
        "cycle_duration_us": stats([r["duration_us"] for r in rows if r["duration_us"]], 0),
        "missed": totals.get("missed"), "late": totals.get("late"), "faults": totals.get("faults"),
        "results": {k: sum(1 for r in rows if r["result"] == k) for k in {r["result"] for r in rows}},
        "boot_s": round(boot_s, 2), "effective_tick_ms": effective_tick_ms(first, last),
        "status_json_bytes": (state / "status.json").stat().st_size if (state / "status.json").exists() else None,
        "kernel_exit_code": rc, "run_s": round(time.monotonic() - t0, 1),
    }
    log(f"  {strategy} {n:>6} slots: {'PASS' if ok else 'fail'}  lag p50 {lag['p50']} p99 {lag['p99']} "
        f"max {lag['max']} ms, missed {totals.get('missed')}, {len(rows)} cycles, boot {boot_s:.1f} s, "
        f"{trades['orders']} orders ({trades['orders_per_s']}/s; busiest close {trades['burst_orders']} in "
        f"{trades['burst_span_s']} s), {trades['entries_filled']} entries and "
        f"{trades['exits_filled']} exits filled, load {load_start}->{load_end}")
    if keep:
        res["state_dir"] = str(state)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def search(strategy: str, strat_dir: Path, *, start: int, cap: int, precision: float, bisect: bool,
           **kw) -> dict:
    runs = []
    lo, hi = 0, None
    n = start
    while n <= cap:
        r = run_one(n, strategy, strat_dir, **kw)
        runs.append(r)
        if r["pass"]:
            lo = n
            n *= 2
        else:
            hi = n
            break
    while bisect and hi is not None and lo and (hi - lo) / lo > precision:
        mid = int(round((lo + hi) / 2 / 50.0)) * 50 or (lo + hi) // 2
        if mid in (lo, hi):
            break
        r = run_one(mid, strategy, strat_dir, **kw)
        runs.append(r)
        if r["pass"]:
            lo = mid
        else:
            hi = mid
    return {"strategy": strategy, "max_passing_slots": lo or None, "first_failing_slots": hi,
            "capped": hi is None, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", default=None, help="default hold,ema_cross,rsi_reversion,breakout "
                   "(ema_cross,rsi_reversion,breakout with --quick)")
    p.add_argument("--start", type=int, default=None, help="first slot count (default 625; 1250 with --quick)")
    p.add_argument("--cap", type=int, default=None, help="largest slot count tried (default 20000; 5000 with --quick)")
    p.add_argument("--no-trading", dest="trading", action="store_false",
                   help="the shipped strategies with their default parameters (they rarely trade in a short run)")
    p.add_argument("--precision", type=float, default=0.125, help="bisect until (fail-pass)/pass <= this")
    p.add_argument("--speed", type=float, default=150.0)
    p.add_argument("--tick-ms", type=int, default=100)
    p.add_argument("--closes", type=int, default=None, help="15m closes per run (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="the shipped three, doubling only from 1,250 up to 5,000")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--launcher", choices=LAUNCHERS, default="direct",
                   help="direct (python -m kernel, default) or runkernel (manage.py)")
    p.add_argument("--name", default=None)
    a = p.parse_args(argv)
    strategies = (a.strategies or (",".join(SHIPPED) if a.quick else "hold," + ",".join(SHIPPED))).split(",")
    closes = a.closes or 2  # 1 close is too short for exits to be filled reliably
    cap = a.cap or (TARGET_SLOTS if a.quick else 20_000)
    start = a.start or (1250 if a.quick else 625)
    name = a.name or (f"{NAME}_quick" if a.quick else NAME)
    machine = machine_info()
    tmp = make_temp_dir("fs-bench-scale-strategies-")
    strat_dir = copy_repo_strategies(tmp / "strategies", extra={"hold": HOLD})
    commit = intent_commit_rate()
    out = []
    try:
        for s in strategies:
            log(f"scale: {s}, from {start} slots, speed {a.speed:g}, {closes} x 15m closes per run, "
                f"{'trading' if a.trading else 'default parameters'}")
            out.append(search(s, strat_dir, start=start, cap=cap, precision=a.precision, bisect=not a.quick,
                              speed=a.speed, tick_ms=a.tick_ms, closes=closes, launcher=a.launcher, keep=a.keep,
                              trading=a.trading))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for s in out:
        for r in s["runs"]:
            t = r["trading"]
            rows.append([s["strategy"], r["slots"], "pass" if r["pass"] else "FAIL", r["cycles"],
                         r["lag_wall_ms"]["p50"], r["lag_wall_ms"]["p99"], r["lag_wall_ms"]["max"],
                         r["full_burst_last_start_ms"]["max"], r["cycle_duration_us"]["p50"], r["missed"],
                         t["orders"], t["orders_per_s"], t["burst_orders"], t["burst_orders_per_s"],
                         t["entries_filled"], t["exits_filled"],
                         f"{r['loadavg_1m'][0]}->{r['loadavg_1m'][1]}", r["boot_s"], r["effective_tick_ms"],
                         round((r["status_json_bytes"] or 0) / 1e6, 2)])
    table = format_table(["strategy", "slots", "", "cycles", "lag p50 ms", "lag p99 ms", "lag max ms",
                          "full burst ms", "cycle p50 us", "missed", "orders", "orders/s", "burst orders", "burst orders/s", "entries",
                          "exits", "load 1m", "boot s", "tick ms", "status MB"], rows)
    table2 = format_table(["strategy", "max slots (p99 lag <= 1 s, no miss, traded)", "first failing"],
                          [[s["strategy"], s["max_passing_slots"], s["first_failing_slots"]] for s in out])
    best = {s["strategy"]: next((r for r in s["runs"] if r["slots"] == s["max_passing_slots"]), None) for s in out}
    summary = {"speed": a.speed, "tick_ms": a.tick_ms, "closes_per_run": closes, "launcher": a.launcher,
               "trading": a.trading,
               "criterion": "p99 wall lag <= 1000 ms, no missed cycle, entries and exits filled (shipped strategies)",
               "max_slots": {s["strategy"]: s["max_passing_slots"] for s in out},
               "first_failing": {s["strategy"]: s["first_failing_slots"] for s in out},
               "orders_per_s_at_max": {k: (r["trading"]["orders_per_s"] if r else None) for k, r in best.items()},
               "burst_orders_per_s_at_max": {k: (r["trading"]["burst_orders_per_s"] if r else None)
                                             for k, r in best.items()},
               "target": f"{TARGET_SLOTS:,} trading slots per kernel",
               "target_met": {s["strategy"]: (s["max_passing_slots"] or 0) >= TARGET_SLOTS and a.trading
                              for s in out if s["strategy"] in SHIPPED}}
    summary["intents_per_s"] = {k: v["intents_per_s"] for k, v in commit.items()}
    table3 = format_table(["8 workers recording intents", "intents/s", "commits", "intents per commit"],
                          [[k, v["intents_per_s"], v["commits"], v["intents_per_commit"]] for k, v in commit.items()])
    emit(name, {"summary": summary, "machine": machine, "intent_commit": commit, "searches": out},
         ["scale: every run = N slots, one kernel, lag = candle close -> cycle start (wall ms)\n\n" + table,
          table2, table3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
