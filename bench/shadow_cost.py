"""The cost of a shadow deploy per cycle (kernel/shadow.py): cycles/s and the live cycle's own
duration, without and with a shadow of the same strategy evaluated beside every live cycle.

In this process: a kernel on a manual clock (tests/kernel/kernel_driver.py), ``--slots`` slots
of one strategy, the clock moved one 5m candle at a time for ``--steps`` candles, each step
settled (every cycle of it run on the workers and folded) before the next. Phase 1 runs without
a shadow; then ``reload {"shadow": true}`` starts one (a copy of the strategy differing by a
comment: the same decisions, its own state) and phase 2 runs the same number of candles; the
shadow's evaluations are waited for at the end (they run on the shadow's thread, never in the
live cycle); a rollback discards it and phase 3 runs without a shadow again, the control for what
the grown ledger alone changes. The change reported is phase 2 against the mean of 1 and 3. Strategies: ``flip`` (an order at every cycle: the order path included) and
``hold`` (no orders: the evaluation alone).

    .venv/bin/python -m bench.shadow_cost             # 16 slots, 40 candles per phase
    .venv/bin/python -m bench.shadow_cost --quick     # 8 slots, 15 candles

Conditions printed with the table: git commit, load average, Python, cores, slots, candles,
whether orders happened (bench/harness.py ``machine_info``); the machine is shared.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import emit, format_table, log, machine_info
from tests.kernel.kernel_driver import M5, Driver
from tests.support.strategy_folders import write_strategies
from tests.support.strategy_sources import FLIPFLOP, hold_source
from tests.support.waiting import wait_until

NAME = "shadow_cost"
STRATEGIES = {"flip": FLIPFLOP, "hold": hold_source(tag="bench", warmup=30)}


def _phase(d: Driver, slots: list[str], steps: int) -> dict:
    before = {s: len(d.cycles(s)) for s in slots}
    t0 = time.perf_counter()
    for _ in range(steps):
        d.advance(M5, step_ms=M5)
    wall = time.perf_counter() - t0
    rows = [c for s in slots for c in d.cycles(s)[before[s]:]]
    durations = [c["duration_us"] for c in rows if c["duration_us"] is not None]
    return {"cycles": len(rows), "wall_s": round(wall, 3), "cycles_per_s": round(len(rows) / wall, 1),
            "live_cycle_us_p50": round(statistics.median(durations), 1) if durations else None,
            "live_cycle_us_mean": round(statistics.fmean(durations), 1) if durations else None}


def measure(strategy: str, n_slots: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="fs-shadow-bench-") as tmp:
        folder = write_strategies(Path(tmp) / "strategies", {"__init__": "", strategy: STRATEGIES[strategy]})
        d = Driver(Path(tmp) / "state", folder)
        try:
            slots = [f"s{i:02d}-5m" for i in range(n_slots)]
            for sid in slots:
                d.add_slot(sid, strategy)
            d.advance(M5, step_ms=M5)  # first cycles: warm caches
            orders_before = d.kernel.ledger.summary()["orders"]
            without = _phase(d, slots, steps)
            orders_without = d.kernel.ledger.summary()["orders"] - orders_before
            (folder / f"{strategy}.py").write_text(STRATEGIES[strategy] + "\n# the shadow's copy\n")
            r = d.command("reload", strategy=strategy, shadow=True, cycles=100_000)
            assert r["result"] == "applied", r
            orders_before = d.kernel.ledger.summary()["orders"]
            with_shadow = _phase(d, slots, steps)
            orders_with = d.kernel.ledger.summary()["orders"] - orders_before
            t0 = time.perf_counter()

            def caught_up() -> dict | None:
                sh = d.kernel.snapshot()["strategies"][strategy]["shadow"]["counts"]
                return sh if sh["evaluations"] + sh["skipped"] >= with_shadow["cycles"] else None

            counts = wait_until(caught_up, timeout=120, what="the shadow to catch up", poll=0.01)
            drain_s = time.perf_counter() - t0
            # The drift control: without a shadow again (discarded), on the grown ledger.
            assert d.command("rollback", strategy=strategy)["result"] == "applied"
            orders_before = d.kernel.ledger.summary()["orders"]
            after = _phase(d, slots, steps)
            orders_after = d.kernel.ledger.summary()["orders"] - orders_before
        finally:
            d.close()
    return {"strategy": strategy, "slots": n_slots, "candles": steps, "without": without, "with_shadow": with_shadow,
            "without_after": after, "orders_without": orders_without, "orders_with_shadow": orders_with,
            "orders_without_after": orders_after, "shadow": counts,
            "shadow_drain_after_s": round(drain_s, 3),
            "cycles_per_s_change_pct": round(100 * (with_shadow["cycles_per_s"]
                                                    / statistics.fmean([without["cycles_per_s"], after["cycles_per_s"]])
                                                    - 1), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 slots, 15 candles per phase")
    ap.add_argument("--slots", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    n_slots = args.slots or (8 if args.quick else 16)
    steps = args.steps or (15 if args.quick else 40)
    machine = machine_info()
    rows = []
    for strategy in STRATEGIES:
        log(f"{strategy}: {n_slots} slots, {steps} candles without a shadow, then {steps} with one")
        rows.append(measure(strategy, n_slots, steps))
    table = format_table(
        ["strategy", "shadow", "cycles", "cycles/s", "live cycle µs p50", "live cycle µs mean", "orders",
         "shadow evaluations", "skipped", "differences", "shadow µs per evaluation"],
        [row for r in rows for row in (
            [r["strategy"], "no", r["without"]["cycles"], r["without"]["cycles_per_s"],
             r["without"]["live_cycle_us_p50"], r["without"]["live_cycle_us_mean"], r["orders_without"], "-", "-", "-", "-"],
            [r["strategy"], "yes", r["with_shadow"]["cycles"], r["with_shadow"]["cycles_per_s"],
             r["with_shadow"]["live_cycle_us_p50"], r["with_shadow"]["live_cycle_us_mean"], r["orders_with_shadow"],
             r["shadow"]["evaluations"], r["shadow"]["skipped"], r["shadow"]["differences"],
             round(r["shadow"]["busy_us"] / max(1, r["shadow"]["evaluations"]), 1)],
            [r["strategy"], "no (after)", r["without_after"]["cycles"], r["without_after"]["cycles_per_s"],
             r["without_after"]["live_cycle_us_p50"], r["without_after"]["live_cycle_us_mean"],
             r["orders_without_after"], "-", "-", "-", "-"])])
    conditions = (f"commit {machine['git_commit']} (kernel sources {machine['kernel_sources_sha256']}), "
                  f"Python {machine['python']}, load average at start {machine['loadavg_at_start']}, "
                  f"{machine['nproc']} cores, {n_slots} slots, {steps} candles per phase, 4 workers, "
                  f"orders happened: " + ", ".join(f"{r['strategy']} {'yes' if r['orders_without'] else 'no'}"
                                                   for r in rows))
    summary = {"slots": n_slots, "candles": steps,
               **{f"{r['strategy']}_cycles_per_s_change_pct": r["cycles_per_s_change_pct"] for r in rows},
               **{f"{r['strategy']}_shadow_us_per_evaluation":
                  round(r["shadow"]["busy_us"] / max(1, r["shadow"]["evaluations"]), 1) for r in rows}}
    emit(NAME + ("_quick" if args.quick else ""), {"summary": summary, "machine": machine, "runs": rows},
         [conditions, table])


if __name__ == "__main__":
    main()
