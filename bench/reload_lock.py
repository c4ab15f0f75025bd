"""How long new cycles wait on the reload lock while reloads run.

For each slot count (16 and 1,000 by default):

1. a temp state dir; its slots written beforehand with the kernel's own ``Ledger.save_slots``
   (the 16-slot set is the reference deployment of ``kernel.demo``; 1,000 slots extend it
   with numbered ids); a temp copy of strategies/ passed with ``--strategies-dir``;
2. a real kernel: ``manage.py runkernel`` in a subprocess at high ``--speed`` (1000x with
   16 slots: a 5m close every 300 ms; 150x with 1,000: bursts of 500 or 1,000 cycles every
   2 s), so that cycles are often in flight when a swap happens, with headroom left on a
   2-core machine (at a 5m close per tick, tick jitter alone makes slots miss candles);
3. a baseline period with no reload, then ``--reloads`` reload commands of one strategy
   (``--strategy``, ema_cross by default), one after the other, each written into
   control.json the way kernelctl does it and waited for in status.json. Before every
   second reload the strategy file is rewritten (a new trailing comment, atomically), so
   half the reloads are real swaps (``loaded``) and half find the same sources
   (``unchanged``);
4. the kernel is stopped (SIGTERM), and every cycle's lock wait is read from its ledger
   (table ``cycles``, column ``lock_wait_us``: the time ``StrategyRegistry.pin`` waited for
   the reload lock, measured inside the kernel, whole microseconds);
   the swap's own wait for the lock comes from each reload command's result
   (``detail.strategies[].lock_wait_ms``, the value status.json shows in ``reloads[]``).

Reported per slot count: cycle lock wait p50/p99/max during the reloads (and, for
comparison, during the baseline), cycles measured, missed cycles (sum of
``slots[].missed_cycles``), reload results, the swap's lock wait, the reload round trip.

    .venv/bin/python -m bench.reload_lock            # full: 1,000 reloads x {16, 1000} slots
    .venv/bin/python -m bench.reload_lock --quick    # 100 reloads each
"""
from __future__ import annotations

import argparse
import bisect
import shutil
import sys
import time
from collections import Counter

from bench.harness import (
    LAUNCHERS,
    bench_kernel,
    effective_tick_ms,
    emit,
    format_table,
    histogram,
    log,
    machine_info,
    make_temp_dir,
    seed_bench_slots,
    start_running,
    stats,
)
from kernel.control import append_commands, atomic_write_text
from kernel.control_client import build_command
from tests.support.ledger_reader import ledger_rows
from tests.support.status_reader import StatusReader, done_ids, iso_to_ms
from tests.support.strategy_folders import copy_repo_strategies

NAME = "reload_lock"
WAIT_EDGES_US = (1, 10, 100, 1_000, 10_000)


class SimClockFit:
    """Maps wall time to the kernel's simulated clock: sim = a + speed * wall_ms.

    Each status snapshot takes ``clock_at`` first and ``heartbeat_at`` (wall) a little later,
    so ``clock - speed * heartbeat`` never exceeds the true ``a``: the largest one seen is the
    best estimate (within about 1 ms of wall time, the resolution of ``heartbeat_at``)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.a: float | None = None

    def add(self, status: dict | None) -> None:
        if not status or not status.get("clock_at") or not status.get("heartbeat_at"):
            return
        a = iso_to_ms(status["clock_at"]) - self.speed * iso_to_ms(status["heartbeat_at"])
        self.a = a if self.a is None else max(self.a, a)

    def sim_ms(self, wall_ms: float) -> float:
        return self.a + self.speed * wall_ms


def wall_ms() -> float:
    return time.time_ns() / 1e6


def missed_sum(status: dict) -> int:
    return sum(int(s.get("missed_cycles") or 0) for s in status.get("slots") or [])


def run_one(n_slots: int, *, reloads: int, speed: float, tick_ms: int, strategy: str,
            baseline_s: float, workers: int | None, keep: bool, launcher: str = "runkernel") -> dict:
    tmp = make_temp_dir(f"fs-bench-reload-{n_slots}-")
    state = tmp / "state"
    state.mkdir()
    strat_dir = copy_repo_strategies(tmp / "strategies")
    target = strat_dir / f"{strategy}.py"
    if not target.is_file():
        raise SystemExit(f"no strategy {strategy!r} in strategies/")
    original = target.read_text(encoding="utf-8")
    configs = seed_bench_slots(state, n_slots)
    n_target = sum(1 for c in configs if c.strategy == strategy)
    log(f"{n_slots} slots ({n_target} on {strategy}), speed {speed:g}, tick {tick_ms} ms, state {state}")

    kernel = bench_kernel(state, speed=speed, tick_ms=tick_ms, strategies_dir=strat_dir,
                          cash=1e12, workers=workers, launcher=launcher)
    # status.json is about 1 MB with 1,000 slots: parse it only when it changed (or twice a second).
    reader = StatusReader(state, force_s=0.5)
    samples: list[dict] = []
    t_start = time.monotonic()
    fit = SimClockFit(speed)
    fit.add(start_running(kernel))
    try:
        time.sleep(baseline_s)
        st0 = reader.read()
        fit.add(st0)
        phase_start_wall = wall_ms()
        missed_at_start = missed_sum(st0)
        log(f"baseline done ({st0['cycles'].get('ran')} cycles); {reloads} reloads")
        t_phase = time.monotonic()
        last_status = st0
        for i in range(reloads):
            changed = i % 2 == 0
            if changed:
                atomic_write_text(target, original + f"\n# bench revision {i}\n")
            cmd = build_command("reload", args={"strategy": strategy}, issued_by="bench")
            t0, w0 = time.monotonic_ns(), wall_ms()
            append_commands(state, [cmd], prune_ids=done_ids(last_status))
            res, last_status, seen = reader.wait_command(cmd.id, timeout=60, abort=kernel.check_alive)
            w1 = wall_ms()
            fit.add(last_status)
            per = ((res.get("detail") or {}).get("strategies") or [{}])[0]
            samples.append({
                "i": i, "file_changed": changed, "command_result": res.get("result"),
                "reload_result": per.get("result"), "swap_lock_wait_ms": per.get("lock_wait_ms"),
                "round_trip_ms": round((seen - t0) / 1e6, 3), "error": res.get("error"),
                "sent_wall_ms": round(w0, 3), "result_seen_wall_ms": round(w1, 3),
            })
            if (i + 1) % max(1, reloads // 10) == 0:
                log(f"  {i + 1}/{reloads} reloads, {last_status['cycles'].get('ran')} cycles so far")
        phase_end_wall = wall_ms()
        phase_s = time.monotonic() - t_phase
        missed_at_end = missed_sum(last_status)
        kernel_view = {k: last_status["cycles"].get(k) for k in
                       ("lock_wait_us_p50", "lock_wait_us_p99", "lock_wait_us_max")}
    finally:
        rc = kernel.stop()
    final = reader.read() or {}
    run_s = time.monotonic() - t_start

    rows = ledger_rows(state, "SELECT started_ms, lock_wait_us, duration_us, lag_ms, result, strategy, version "
                              "FROM cycles")
    start_sim, end_sim = fit.sim_ms(phase_start_wall), fit.sim_ms(phase_end_wall)
    during = [r for r in rows if r["started_ms"] is not None and start_sim <= r["started_ms"] <= end_sim]
    before = [r for r in rows if r["started_ms"] is not None and r["started_ms"] < start_sim]
    waits = [r["lock_wait_us"] for r in during if r["lock_wait_us"] is not None]
    base_waits = [r["lock_wait_us"] for r in before if r["lock_wait_us"] is not None]
    versions = sorted({r["version"] for r in during if r["strategy"] == strategy and r["version"] is not None})

    # Which reload was in flight when each cycle started (command written -> result seen)?
    # Only a "loaded" reload takes the lock; an "unchanged" one does the same loading and
    # checking work without it, so cycles in its window show what that work alone costs.
    windows = sorted((fit.sim_ms(x["sent_wall_ms"]), fit.sim_ms(x["result_seen_wall_ms"]),
                      x["reload_result"] or x["command_result"]) for x in samples)
    starts = [w[0] for w in windows]
    by_kind: dict[str, list[int]] = {}
    for r in during:
        if r["lock_wait_us"] is None:
            continue
        k = bisect.bisect_right(starts, r["started_ms"]) - 1
        kind = windows[k][2] if k >= 0 and r["started_ms"] <= windows[k][1] else "between reloads"
        by_kind.setdefault(kind, []).append(r["lock_wait_us"])

    results = Counter(s["reload_result"] or s["command_result"] for s in samples)
    swap_waits = [s["swap_lock_wait_ms"] for s in samples if s["swap_lock_wait_ms"] is not None]
    errors = Counter(r["result"] for r in during if r["result"] not in ("hold", "enter", "exit"))
    summary = {
        "slots": n_slots,
        "slots_on_reloaded_strategy": n_target,
        "speed": speed,
        "tick_ms": tick_ms,
        "launcher": launcher,
        "reloads": len(samples),
        "reload_results": dict(results),
        "reload_phase_s": round(phase_s, 1),
        "cycles_measured": len(waits),
        "cycles_per_s": round(len(waits) / phase_s, 1) if phase_s else None,
        "cycle_lock_wait_us": stats(waits),
        "cycle_lock_wait_us_hist": histogram(waits, WAIT_EDGES_US),
        "cycle_lock_wait_us_by_reload_in_flight": {k: {**stats(v), ">=1000us": sum(1 for x in v if x >= 1000)}
                                                   for k, v in sorted(by_kind.items())},
        "baseline_cycles": len(base_waits),
        "baseline_cycle_lock_wait_us": stats(base_waits),
        "kernel_status_lock_wait_us_last_5000": kernel_view,
        "missed_cycles_during_reloads": missed_at_end - missed_at_start,
        "missed_cycles_whole_run": missed_sum(final),
        "cycle_results_not_hold_enter_exit": dict(errors),
        "versions_run_during_reloads": len(versions),
        "swap_lock_wait_ms": stats(swap_waits, 4),
        "reload_round_trip_ms": stats(s["round_trip_ms"] for s in samples),
        "cycle_duration_us": stats(r["duration_us"] for r in during),
        "cycle_lag_wall_ms": stats([r["lag_ms"] / speed for r in during if r["lag_ms"] is not None]),
        "effective_tick_ms_during_reloads": effective_tick_ms(st0, last_status),
        "kernel_exit_code": rc,
        "run_s": round(run_s, 1),
    }
    if keep:
        summary["state_dir"] = str(state)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"summary": summary, "reloads": samples}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slots", default="16,1000", help="comma-separated slot counts (default 16,1000)")
    p.add_argument("--reloads", type=int, default=None, help="reloads per slot count (default 1000; 100 with --quick)")
    p.add_argument("--speed", default="1000,150",
                   help="clock speed, one value or one per slot count (default 1000,150: a 5m close "
                        "every 300 ms with 16 slots, every 2 s with 1000)")
    p.add_argument("--tick-ms", type=int, default=100)
    p.add_argument("--workers", type=int, default=None, help="runkernel --workers (default: the kernel's)")
    p.add_argument("--strategy", default="ema_cross", help="the strategy reloaded (default ema_cross)")
    p.add_argument("--baseline-s", type=float, default=None, help="seconds of cycles without reloads first "
                   "(default 20; 5 with --quick)")
    p.add_argument("--quick", action="store_true", help="100 reloads, 5 s baseline")
    p.add_argument("--keep", action="store_true", help="keep the temp state dirs")
    p.add_argument("--launcher", choices=LAUNCHERS, default="runkernel",
                   help="runkernel: manage.py runkernel (default); direct: the same command without "
                        "django.setup() (python -m kernel)")
    p.add_argument("--name", default=None, help=f"results file name (default {NAME}, {NAME}_quick)")
    a = p.parse_args(argv)

    slot_counts = [int(x) for x in a.slots.split(",") if x.strip()]
    speeds = [float(x) for x in a.speed.split(",") if x.strip()]
    if len(speeds) == 1:
        speeds *= len(slot_counts)
    if len(speeds) != len(slot_counts):
        p.error("--speed takes one value or one per slot count")
    reloads = a.reloads if a.reloads is not None else (100 if a.quick else 1000)
    baseline_s = a.baseline_s if a.baseline_s is not None else (5.0 if a.quick else 20.0)
    name = a.name or (f"{NAME}_quick" if a.quick else NAME)

    machine = machine_info()
    runs = []
    for n, speed in zip(slot_counts, speeds):
        runs.append(run_one(n, reloads=reloads, speed=speed, tick_ms=a.tick_ms, strategy=a.strategy,
                            baseline_s=baseline_s, workers=a.workers, keep=a.keep,
                            launcher=a.launcher))

    rows = []
    for r in runs:
        s = r["summary"]
        w, b, sw = s["cycle_lock_wait_us"], s["baseline_cycle_lock_wait_us"], s["swap_lock_wait_ms"]
        rt = s["reload_round_trip_ms"]
        res = s["reload_results"]
        rows.append([s["slots"], s["speed"], s["reloads"],
                     f"{res.get('loaded', 0)}/{res.get('unchanged', 0)}/"
                     f"{sum(v for k, v in res.items() if k not in ('loaded', 'unchanged'))}",
                     s["cycles_measured"], w["p50"], w["p99"], w["max"], b["p99"], b["max"],
                     s["missed_cycles_during_reloads"], sw["p50"], sw["p99"], sw["max"], rt["p50"], rt["p99"]])
    table = format_table(
        ["slots", "speed", "reloads", "loaded/same/other", "cycles", "wait p50 us", "wait p99 us",
         "wait max us", "base p99 us", "base max us", "missed", "swap p50 ms", "swap p99 ms",
         "swap max ms", "rtt p50 ms", "rtt p99 ms"], rows)
    rows2 = []
    for r in runs:
        for kind, st in r["summary"]["cycle_lock_wait_us_by_reload_in_flight"].items():
            rows2.append([r["summary"]["slots"], kind, st["n"], st["p50"], st["p99"], st["max"], st[">=1000us"]])
    table2 = format_table(["slots", "reload in flight", "cycles", "wait p50 us", "wait p99 us", "wait max us",
                           "waits >= 1 ms"], rows2)
    summary = {"runs": [r["summary"] for r in runs], "target": "cycle lock wait p99 < 1 ms",
               "target_met": all((r["summary"]["cycle_lock_wait_us"]["p99"] or 0) < 1000 for r in runs)}
    emit(name, {"summary": summary, "machine": machine, "reloads": {str(r["summary"]["slots"]): r["reloads"]
                                                                     for r in runs}},
         ["reload lock: how long new cycles wait for the lock (StrategyRegistry.pin) while reloads run\n"
          "(wait = per-cycle lock_wait_us from the ledger; base = the same before any reload; "
          "swap = the reload's own wait for the lock; rtt = reload command written -> result in status.json)\n\n"
          + table,
          "the same cycle lock waits, by the reload in flight when the cycle started (only a 'loaded' reload "
          "takes the lock;\nan 'unchanged' one does the same loading and checking without it)\n\n" + table2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
