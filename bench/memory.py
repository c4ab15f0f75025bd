"""Memory: the kernel's RSS per 1,000 slots, and its RSS over 1,000 hot reloads.

(a) **RSS per slot count**: for each ``--slot-counts`` (16, 1,000, 2,000), a kernel
    (``python -m kernel``, paper broker, synthetic candles) runs until every slot has run a
    cycle; its ``VmRSS`` (``/proc/<pid>/status``) is read then. Reported: RSS per count and
    the least-squares slope in MB per 1,000 slots.
(b) **RSS over reloads**: one kernel with ``--reload-slots`` slots (16); the strategy file is
    rewritten with a new comment and a ``reload`` command written, its result waited for, 1,000
    times (``--reloads``); RSS sampled every 100 reloads (and before the first). Reported: the
    samples and the least-squares slope in KB per reload, and the growth first → last. Every
    reload loads a new version (a new generation package, stored in the release store), the
    previous one kept for rollback and the one before it dropped.

Both kernels run at ``--speed`` 60 with paper orders; whether they traded is counted from
their ledgers.

    .venv/bin/python -m bench.memory            # 16/1,000/2,000 slots; 1,000 reloads
    .venv/bin/python -m bench.memory --quick    # 16/1,000 slots; 300 reloads
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from bench.harness import bench_kernel, emit, format_table, log, machine_info, make_temp_dir, seed_bench_slots, \
    start_running
from kernel.control import append_commands, atomic_write_text
from kernel.control_client import build_command
from tests.support.ledger_reader import ledger_rows
from tests.support.status_reader import StatusReader, done_ids
from tests.support.strategy_folders import copy_repo_strategies
from tests.support.waiting import wait_until

NAME = "memory"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


def traded(state: Path) -> dict[str, int]:
    return {t: ledger_rows(state, f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] for t in ("orders", "fills")}


def rss_for_slots(n: int, *, speed: float, tick_ms: int, keep: bool) -> dict:
    tmp = make_temp_dir(f"fs-bench-memory-{n}-")
    state = tmp / "state"
    state.mkdir()
    seed_bench_slots(state, n)
    kernel = bench_kernel(state, speed=speed, tick_ms=tick_ms, launcher="direct", cash=1e12)
    try:
        start_running(kernel)
        reader = StatusReader(state, force_s=0.2)
        wait_until(lambda: (st := reader.poll()) and all(s.get("cycles", 0) > 0 for s in st.get("slots", [])),
                   timeout=300, poll=0.5, what=f"every one of {n} slots to run a cycle", abort=kernel.check_alive)
        rss = rss_mb(kernel.pid)
        counts = traded(state)
    finally:
        kernel.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"  {n} slots: RSS {rss:.1f} MB")
    return {"slots": n, "rss_mb": round(rss, 2), **counts}


def rss_over_reloads(reloads: int, every: int, *, slots: int, speed: float, tick_ms: int, strategy: str,
                     keep: bool) -> dict:
    tmp = make_temp_dir("fs-bench-memory-reloads-")
    state = tmp / "state"
    state.mkdir()
    strat_dir = copy_repo_strategies(tmp / "strategies")
    target = strat_dir / f"{strategy}.py"
    original = target.read_text(encoding="utf-8")
    seed_bench_slots(state, slots)
    kernel = bench_kernel(state, speed=speed, tick_ms=tick_ms, launcher="direct", strategies_dir=strat_dir,
                          cash=1e12)
    samples: list[dict] = []
    results: dict[str, int] = {}
    try:
        start_running(kernel)
        reader = StatusReader(state, force_s=0.05)
        last = reader.read()
        time.sleep(2.0)
        samples.append({"reloads": 0, "rss_mb": round(rss_mb(kernel.pid), 2)})
        for i in range(1, reloads + 1):
            atomic_write_text(target, original + f"\n# bench memory reload {i}\n")
            cmd = build_command("reload", args={"strategy": strategy}, issued_by="bench")
            append_commands(state, [cmd], prune_ids=done_ids(last))
            res, last, _ = reader.wait_command(cmd.id, timeout=60, abort=kernel.check_alive)
            per = ((res.get("detail") or {}).get("strategies") or [{}])[0]
            key = per.get("result") or res.get("result")
            results[key] = results.get(key, 0) + 1
            if i % every == 0:
                samples.append({"reloads": i, "rss_mb": round(rss_mb(kernel.pid), 2)})
                log(f"  {i} reloads: RSS {samples[-1]['rss_mb']:.1f} MB")
        counts = traded(state)
    finally:
        kernel.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    xs = [s["reloads"] for s in samples]
    ys = [s["rss_mb"] for s in samples]
    k = slope(xs, ys)
    # The first reload imports and warms what every later one reuses (the checks, the release
    # store, SQLite's page cache): the slope from the first sample after it is the growth.
    warm = slope(xs[1:], ys[1:])
    return {"slots": slots, "reloads": reloads, "sample_every": every, "samples": samples,
            "reload_results": results, "slope_kb_per_reload": round(k * 1024, 3) if k is not None else None,
            "slope_after_first_sample_kb_per_reload": round(warm * 1024, 3) if warm is not None else None,
            "growth_first_to_last_mb": round(ys[-1] - ys[0], 2), **counts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slot-counts", default=None, help="default 16,1000,2000 (16,1000 with --quick)")
    p.add_argument("--reloads", type=int, default=None, help="default 1000 (300 with --quick)")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--reload-slots", type=int, default=16)
    p.add_argument("--speed", type=float, default=60.0)
    p.add_argument("--tick-ms", type=int, default=100)
    p.add_argument("--strategy", default="ema_cross")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)
    counts = [int(x) for x in (a.slot_counts or ("16,1000" if a.quick else "16,1000,2000")).split(",")]
    reloads = a.reloads or (300 if a.quick else 1000)
    machine = machine_info()
    log(f"memory: RSS at {counts} slots, then {reloads} reloads with {a.reload_slots} slots")
    per_count = [rss_for_slots(n, speed=a.speed, tick_ms=a.tick_ms, keep=a.keep) for n in counts]
    per_1000 = slope([r["slots"] for r in per_count], [r["rss_mb"] for r in per_count])
    over = rss_over_reloads(reloads, a.every, slots=a.reload_slots, speed=a.speed, tick_ms=a.tick_ms,
                            strategy=a.strategy, keep=a.keep)
    summary = {
        "loadavg_1m_start": machine["loadavg_at_start"][0], "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "rss_by_slots": per_count, "rss_mb_per_1000_slots": round(per_1000 * 1000, 2) if per_1000 else None,
        "reloads": {k: v for k, v in over.items() if k != "samples"}, "reload_samples": over["samples"],
        "target": "RSS per 1,000 slots reported; no growth over 1,000 reloads (slope ~ 0 KB/reload)",
    }
    t1 = format_table(["slots", "RSS MB", "orders", "fills"],
                      [[r["slots"], r["rss_mb"], r["orders"], r["fills"]] for r in per_count])
    t2 = format_table(["reloads", "RSS MB"], [[s["reloads"], s["rss_mb"]] for s in over["samples"]])
    emit(NAME + ("_quick" if a.quick else ""), {"summary": summary, "machine": machine},
         [f"RSS by slot count (python -m kernel): {summary['rss_mb_per_1000_slots']} MB per 1,000 slots\n\n" + t1,
          f"RSS over {reloads} reloads ({a.reload_slots} slots; {over['orders']} orders, {over['fills']} fills; "
          f"results {over['reload_results']}): slope {over['slope_kb_per_reload']} KB/reload, "
          f"{over['slope_after_first_sample_kb_per_reload']} KB/reload from the first sample after 0, "
          f"first → last {over['growth_first_to_last_mb']} MB\n\n" + t2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
