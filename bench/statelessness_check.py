"""The per-cycle cost of the statelessness check: ``StrategyVersion.state_changed()``, which
kernel/cycles.py runs after every ``evaluate`` (kernel/versions/statelessness.py).

For each strategy shipped in strategies/: load it as the kernel does (a fresh generation),
pass its checks (``check_version``: a smoke evaluation, then the baseline watch), evaluate it
once on its warm-up of candles, then time ``state_changed()`` in ``--rounds`` rounds of
``--calls`` calls and report the median and the best round in µs per call, beside the cost
of one ``evaluate`` on the same candles (median of ``--rounds`` rounds), the number of places
watched (probes) and the check's share of evaluate + check. In this process, no kernel.

    .venv/bin/python -m bench.statelessness_check            # 7 rounds of 20,000 calls
    .venv/bin/python -m bench.statelessness_check --quick    # 3 rounds of 5,000 calls

Conditions printed with the table: git commit, load average at start and end, Python version
(bench/harness.py ``machine_info``); the machine is shared, so read the load average.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

from bench.harness import emit, format_table, log, machine_info
from kernel.strategy_api import Candle, Context
from kernel.versions.checks import SmokeSample, check_version, run_evaluate
from kernel.versions.loader import StrategyLoader
from tests.support.checkout import REPO

NAME = "statelessness_check"
TF_MS = 300_000


def candles(n: int) -> tuple[Candle, ...]:
    """``n`` 5m candles of a slow wave with some noise-free wiggle: crosses and channels happen."""
    out = []
    for i in range(n):
        c = 100.0 + 10.0 * math.sin(i / 15.0) + 2.0 * math.sin(i / 2.3)
        out.append(Candle(1_700_000_000_000 + i * TF_MS, c, c + 0.5, c - 0.5, c, 10.0))
    return tuple(out)


def measure(name: str, rounds: int, calls: int) -> dict:
    loader = StrategyLoader(REPO / "strategies")
    version = loader.load(name, 1)
    params = version.params({})
    cs = candles(version.warmup(params))
    sample = SmokeSample(slot="bench", symbol="BTC/USDT", timeframe="5m", params={}, candles=cs,
                         position=0.0, entry_price=None)
    check_version(version, [sample], budget_s=10.0)
    ctx = Context(slot="bench", symbol="BTC/USDT", timeframe="5m", now_ms=cs[-1].ts + TF_MS, candles=cs,
                  position=0.0, entry_price=None, params=params)
    run_evaluate(version, ctx)
    check = version.state_changed
    per_call = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            check()
        per_call.append((time.perf_counter_ns() - t0) / calls / 1000)
    assert not check(), f"{name}: a shipped strategy changed its state"
    evaluate_us = []
    for _ in range(rounds):
        n = max(1, calls // 100)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            run_evaluate(version, ctx)
        evaluate_us.append((time.perf_counter_ns() - t0) / n / 1000)
    result = {
        "strategy": name, "probes": len(version._watch or ()), "candles": len(cs),
        "check_us_p50": round(statistics.median(per_call), 2), "check_us_min": round(min(per_call), 2),
        "evaluate_us_p50": round(statistics.median(evaluate_us), 1),
    }
    result["check_share_pct"] = round(100 * result["check_us_p50"]
                                      / (result["check_us_p50"] + result["evaluate_us_p50"]), 1)
    version.unload()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds of 5,000 calls")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--calls", type=int, default=None)
    args = ap.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    calls = args.calls or (5_000 if args.quick else 20_000)
    machine = machine_info()
    rows = []
    for name in StrategyLoader(REPO / "strategies").available():
        log(f"{name}: {rounds} rounds of {calls} calls")
        rows.append(measure(name, rounds, calls))
    table = format_table(
        ["strategy", "places watched", "state_changed() µs p50", "best round µs", "evaluate µs p50",
         "check share %"],
        [[r["strategy"], r["probes"], r["check_us_p50"], r["check_us_min"], r["evaluate_us_p50"],
          r["check_share_pct"]] for r in rows])
    conditions = (f"commit {machine['git_commit']} (kernel sources {machine['kernel_sources_sha256']}), "
                  f"Python {machine['python']}, load average at start {machine['loadavg_at_start']}, "
                  f"{machine['nproc']} cores, {rounds} rounds of {calls} calls")
    summary = {"rounds": rounds, "calls": calls,
               **{f"{r['strategy']}_check_us_p50": r["check_us_p50"] for r in rows}}
    emit(NAME + ("_quick" if args.quick else ""), {"summary": summary, "machine": machine, "strategies": rows},
         [conditions, table])


if __name__ == "__main__":
    main()
