"""Scale: the most slots one kernel holds while its cycles start within 1 s of their candle close.

For each strategy (``hold``: a trivial strategy that returns ``hold`` at once, written into a
temp copy of strategies/; then each shipped one: ema_cross, rsi_reversion, breakout), a search
over slot counts: doubling from ``--start`` until a run fails, then bisecting between the last
pass and the first failure until they are within ``--precision`` (12.5 % by default).

One run: a fresh temp state dir whose ``N`` slots (all on the strategy; 8 assets, 5m and 15m
alternating, as the reference deployment) are written **before the kernel starts**, with the
kernel's own ``Ledger.add_slots``; a real kernel (``python -m kernel``, the runkernel command
without Django; ``--launcher runkernel`` for manage.py) at ``--speed`` 150 (a 5m close every
2 s of wall time, a 15m close, when all N slots are due at once, every 6 s), ``--tick-ms`` 100,
8 workers; it runs for ``--closes`` 15m closes (2 by default: about 14 s) after it says
running, then gets SIGTERM and its ledger is read.

A run **passes** when the p99 of the cycles' start lag in wall-clock terms
(``cycles.lag_ms`` / speed: from the candle close to the moment a worker started the cycle)
is at most 1,000 ms, and no cycle was missed (status.json ``cycles.missed``). At speed 150 a
burst has 2 s before the next close; a burst that passes (p99 under 1 s) fits well inside it,
so the speed does not change what a burst costs, only how often one comes.

    .venv/bin/python -m bench.scale                  # all four strategies
    .venv/bin/python -m bench.scale --quick          # hold and ema_cross, doubling only, 1 close
    .venv/bin/python -m bench.scale --strategies hold --start 1000
"""
from __future__ import annotations

import argparse
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


def seed(state: Path, n: int, strategy: str) -> None:
    """``n`` slots all on ``strategy``: the 8 demo assets, 5m and 15m alternating."""
    configs = []
    for i in range(n):
        asset = DEMO_ASSETS[(i // len(DEMO_TIMEFRAMES)) % len(DEMO_ASSETS)]
        tf = DEMO_TIMEFRAMES[i % len(DEMO_TIMEFRAMES)]
        configs.append(SlotConfig(id=f"{asset.lower()}-{tf}-{i:05d}", symbol=f"{asset}/USDT", timeframe=tf,
                                  strategy=strategy, order_notional=500.0, max_notional=2_000.0))
    seed_slots(state, configs)


def run_one(n: int, strategy: str, strat_dir: Path, *, speed: float, tick_ms: int, closes: int,
            launcher: str, keep: bool) -> dict:
    tmp = make_temp_dir(f"fs-bench-scale-{strategy}-{n}-")
    state = tmp / "state"
    state.mkdir()
    t0 = time.monotonic()
    seed(state, n, strategy)
    kernel = bench_kernel(state, speed=speed, tick_ms=tick_ms, strategies_dir=strat_dir, cash=1e12,
                          launcher=launcher)
    t_boot = time.monotonic()
    first = start_running(kernel, timeout=300)
    boot_s = time.monotonic() - t_boot
    run_wall_s = closes * 900.0 / speed + 1.5
    try:
        time.sleep(run_wall_s)
        last = StatusReader(state).read()
        kernel.check_alive()
    finally:
        rc = kernel.stop(timeout=120)
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
    ok = bool(lags) and lag["p99"] <= LAG_LIMIT_MS and int(totals.get("missed") or 0) == 0
    res = {
        "slots": n, "strategy": strategy, "pass": ok, "cycles": len(rows),
        "lag_wall_ms": lag, "full_burst_last_start_ms": stats(full, 1),
        "cycle_duration_us": stats([r["duration_us"] for r in rows if r["duration_us"]], 0),
        "missed": totals.get("missed"), "late": totals.get("late"), "faults": totals.get("faults"),
        "results": {k: sum(1 for r in rows if r["result"] == k) for k in {r["result"] for r in rows}},
        "boot_s": round(boot_s, 2), "effective_tick_ms": effective_tick_ms(first, last),
        "status_json_bytes": (state / "status.json").stat().st_size if (state / "status.json").exists() else None,
        "kernel_exit_code": rc, "run_s": round(time.monotonic() - t0, 1),
    }
    log(f"  {strategy} {n:>6} slots: {'PASS' if ok else 'fail'}  lag p50 {lag['p50']} p99 {lag['p99']} "
        f"max {lag['max']} ms, missed {totals.get('missed')}, {len(rows)} cycles, boot {boot_s:.1f} s")
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
                   "(hold,ema_cross with --quick)")
    p.add_argument("--start", type=int, default=500, help="first slot count (default 500)")
    p.add_argument("--cap", type=int, default=None, help="largest slot count tried (default 32000; 8000 with --quick)")
    p.add_argument("--precision", type=float, default=0.125, help="bisect until (fail-pass)/pass <= this")
    p.add_argument("--speed", type=float, default=150.0)
    p.add_argument("--tick-ms", type=int, default=100)
    p.add_argument("--closes", type=int, default=None, help="15m closes per run (default 2; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="hold and ema_cross, doubling only up to 8,000, 1 close per run")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--launcher", choices=LAUNCHERS, default="direct",
                   help="direct (python -m kernel, default) or runkernel (manage.py)")
    p.add_argument("--name", default=None)
    a = p.parse_args(argv)
    strategies = (a.strategies or ("hold,ema_cross" if a.quick else "hold,ema_cross,rsi_reversion,breakout")).split(",")
    closes = a.closes or (1 if a.quick else 2)
    cap = a.cap or (8000 if a.quick else 32_000)
    name = a.name or (f"{NAME}_quick" if a.quick else NAME)
    machine = machine_info()
    tmp = make_temp_dir("fs-bench-scale-strategies-")
    strat_dir = copy_repo_strategies(tmp / "strategies", extra={"hold": HOLD})
    out = []
    try:
        for s in strategies:
            log(f"scale: {s}, from {a.start} slots, speed {a.speed:g}, {closes} x 15m closes per run")
            out.append(search(s, strat_dir, start=a.start, cap=cap, precision=a.precision, bisect=not a.quick,
                              speed=a.speed, tick_ms=a.tick_ms, closes=closes, launcher=a.launcher, keep=a.keep))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for s in out:
        for r in s["runs"]:
            rows.append([s["strategy"], r["slots"], "pass" if r["pass"] else "FAIL", r["cycles"],
                         r["lag_wall_ms"]["p50"], r["lag_wall_ms"]["p99"], r["lag_wall_ms"]["max"],
                         r["full_burst_last_start_ms"]["max"], r["cycle_duration_us"]["p50"], r["missed"],
                         r["boot_s"], r["effective_tick_ms"], round((r["status_json_bytes"] or 0) / 1e6, 2)])
    table = format_table(["strategy", "slots", "", "cycles", "lag p50 ms", "lag p99 ms", "lag max ms",
                          "full burst ms", "cycle p50 us", "missed", "boot s", "tick ms", "status MB"], rows)
    table2 = format_table(["strategy", "max slots (p99 lag <= 1 s, no miss)", "first failing"],
                          [[s["strategy"], s["max_passing_slots"], s["first_failing_slots"]] for s in out])
    summary = {"speed": a.speed, "tick_ms": a.tick_ms, "closes_per_run": closes, "launcher": a.launcher,
               "criterion": "p99 wall lag <= 1000 ms and no missed cycle",
               "max_slots": {s["strategy"]: s["max_passing_slots"] for s in out},
               "first_failing": {s["strategy"]: s["first_failing_slots"] for s in out},
               "target": "2,000 slots per kernel",
               "target_met": {s["strategy"]: (s["max_passing_slots"] or 0) >= 2000 for s in out}}
    emit(name, {"summary": summary, "machine": machine, "searches": out},
         ["scale: every run = N slots, one kernel, lag = candle close -> cycle start (wall ms)\n\n" + table,
          table2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
