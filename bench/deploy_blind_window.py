"""Deploy blind window: hot reload of a changed strategy against a restart-based deploy.

For each slot count (16 and 1,000 by default), one kernel state dir, one run, alternating:

(a) **hot reload**: the strategy file (``--strategy``, ema_cross) is rewritten with a new
    trailing comment (atomically), then a ``reload`` command is appended to control.json
    (as kernelctl does) and its result waited for in status.json;
(b) **restart**: the kernel process gets SIGTERM (graceful stop: in-flight cycles finish,
    ledger flushed), and the same command is started again on the same state dir (the
    restart-based deploy), waited for until its status.json says ``running``.

Between deploys the kernel runs undisturbed for ``--spacing`` seconds.

The kernel runs at a high ``--speed`` (candle closes every 300 ms with 16 slots, every 2 s with
1,000) so that many closes fall around every deploy; every time is then converted to wall
clock. Each cycle's ``started_ms`` (ledger, kernel clock) is mapped to wall time with the
(``clock_at``, ``heartbeat_at``) pairs of status.json **of the process that ran it** (a restarted
simulated clock resumes where the old one stopped, so each process needs its own mapping).

Reported per deploy, in wall-clock ms:

- *longest gap*: the longest interval between two consecutive cycle starts (any slot) that
  overlaps the deploy (reload: command written -> result seen; restart: SIGTERM -> new process
  running), against the *normal gap* (the gaps longer than a tick, i.e. between candle-close
  bursts, that overlap no deploy, over the whole run: p50 and max). *excess* = longest gap - normal p50: the time the deploy kept cycles
  from starting, at the resolution of the candle-close spacing;
- restart only: SIGTERM -> old process exited, -> new process running (first status.json of
  the new pid: its first tick, when it could first start a cycle) and -> first cycle start
  of the new process (from the ledger); these do not depend on the close spacing except the
  last one, which also waits for the next close (up to one normal gap);
- reload only: the longest time any cycle waited for the reload lock while the reload was in
  flight (``cycles.lock_wait_us``, measured inside the kernel): the time during which the
  swap really kept a cycle from starting;
- missed and late cycles (sum of ``slots[].missed_cycles`` / ``late_cycles`` in status.json,
  after the deploy minus before it) and ledger holes (candles of a slot with no cycle row: a
  restarted kernel schedules from the next close after its boot, so the closes that passed
  while it was down or booting are skipped, and not counted as missed);
- the ratio restart / hot reload, for the longest gap and its excess, and for the blind
  window by the kernel's own measure (SIGTERM -> running against the longest lock wait).

    .venv/bin/python -m bench.deploy_blind_window            # 10 + 10 deploys x {16, 1000} slots
    .venv/bin/python -m bench.deploy_blind_window --quick    # 3 + 3 deploys each
"""
from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import threading
import time
from pathlib import Path

from bench.harness import (
    LAUNCHERS,
    bench_kernel,
    emit,
    format_table,
    log,
    machine_info,
    make_temp_dir,
    seed_bench_slots,
    start_running,
    stats,
)
from kernel.control import append_commands, atomic_write_text
from kernel.control_client import build_command
from kernel.scheduler import timeframe_ms
from tests.support.kernel_process import KernelProcess
from tests.support.ledger_reader import ledger_meta, ledger_rows
from tests.support.status_reader import StatusReader, done_ids, iso_to_ms
from tests.support.strategy_folders import copy_repo_strategies

NAME = "deploy_blind_window"


def wall_ms() -> float:
    return time.time_ns() / 1e6


class StatusLog(threading.Thread):
    """Polls status.json in the background; keeps per pid the best clock fit
    (sim = a + speed * wall, ``a`` the max of clock_at - speed * heartbeat_at) and the
    (wall, missed, late) sums over time."""

    def __init__(self, state_dir: Path, speed: float, every_s: float) -> None:
        super().__init__(daemon=True, name="status-log")
        self.reader = StatusReader(state_dir, force_s=every_s)
        self.speed = speed
        self.every_s = every_s
        self.fit: dict[int, float] = {}
        self.samples: list[tuple[float, int, int, int, str]] = []  # wall, pid, missed, late, state
        self._quit = threading.Event()
        self.lock = threading.Lock()

    def add(self, st: dict | None) -> None:
        if not st or not st.get("clock_at") or not st.get("heartbeat_at") or st.get("state") == "stopped":
            return
        hb = iso_to_ms(st["heartbeat_at"])
        a = iso_to_ms(st["clock_at"]) - self.speed * hb
        pid = st.get("pid")
        slots = st.get("slots") or []
        with self.lock:
            self.fit[pid] = max(self.fit.get(pid, a), a)
            self.samples.append((hb, pid, sum(int(s.get("missed_cycles") or 0) for s in slots),
                                 sum(int(s.get("late_cycles") or 0) for s in slots), st.get("state")))

    def run(self) -> None:
        last = None
        while not self._quit.is_set():
            st = self.reader.poll()
            if st is not None and st is not last:
                self.add(st)
                last = st
            self._quit.wait(self.every_s)

    def stop(self) -> None:
        self._quit.set()
        self.join(5)

    def counters_at(self, wall: float, after: bool) -> tuple[int, int] | None:
        """(missed, late) of the last sample before ``wall`` (or the first after it)."""
        with self.lock:
            s = sorted(self.samples)
        if after:
            for w, _, m, lt, _ in s:
                if w >= wall:
                    return m, lt
            return None
        best = None
        for w, _, m, lt, _ in s:
            if w <= wall:
                best = (m, lt)
        return best


def ledger_meta_clock(state: Path) -> int | None:
    value = ledger_meta(state, "clock_ms")
    return int(float(value)) if value is not None else None


def run_one(n_slots: int, *, speed: float, tick_ms: int, deploys: int, strategy: str,
            baseline_s: float, spacing_s: float, keep: bool, launcher: str) -> dict:
    tmp = make_temp_dir(f"fs-bench-deploy-{n_slots}-")
    state = tmp / "state"
    state.mkdir()
    strat_dir = copy_repo_strategies(tmp / "strategies")
    target = strat_dir / f"{strategy}.py"
    original = target.read_text(encoding="utf-8")
    configs = seed_bench_slots(state, n_slots)
    tf_of = {c.id: timeframe_ms(c.timeframe) for c in configs}
    log(f"deploy blind window: {n_slots} slots, speed {speed:g}, tick {tick_ms} ms, {deploys} hot reloads + "
        f"{deploys} restarts, alternating, state {state}")

    def new_kernel() -> KernelProcess:
        return bench_kernel(state, speed=speed, tick_ms=tick_ms, strategies_dir=strat_dir, cash=1e12,
                            launcher=launcher)

    slog = StatusLog(state, speed, every_s=0.1 if n_slots <= 100 else 0.3)
    kernel = new_kernel()
    t_run = time.monotonic()
    slog.add(start_running(kernel))
    slog.start()
    events: list[dict] = []
    boundaries: list[tuple[int, int]] = []  # (last sim ms of a process, its pid), in order
    reader = StatusReader(state, force_s=0.05)
    last_status = reader.read()
    try:
        time.sleep(baseline_s)
        for i in range(deploys * 2):
            if i % 2 == 0:  # (a) hot reload of a changed strategy
                atomic_write_text(target, original + f"\n# bench deploy {i}\n")
                cmd = build_command("reload", args={"strategy": strategy}, issued_by="bench")
                w0 = wall_ms()
                append_commands(state, [cmd], prune_ids=done_ids(last_status))
                res, last_status, _ = reader.wait_command(cmd.id, timeout=60, abort=kernel.check_alive)
                w1 = wall_ms()
                per = ((res.get("detail") or {}).get("strategies") or [{}])[0]
                events.append({"i": i, "kind": "hot_reload", "start_wall": w0, "end_wall": w1,
                               "result": per.get("result") or res.get("result"),
                               "swap_lock_wait_ms": per.get("lock_wait_ms"), "pid": kernel.pid})
            else:  # (b) restart-based deploy: SIGTERM, start the same command on the same state dir
                old_pid = kernel.pid
                w0 = wall_ms()
                rc = kernel.stop()
                w_exit = wall_ms()
                boundaries.append((ledger_meta_clock(state), old_pid))
                kernel = new_kernel()
                st = start_running(kernel)
                w_seen = wall_ms()
                slog.add(st)
                ready = iso_to_ms(st.get("heartbeat_at"))
                last_status = st
                events.append({"i": i, "kind": "restart", "start_wall": w0, "exit_wall": w_exit,
                               "ready_wall": ready, "ready_seen_wall": w_seen, "end_wall": ready,
                               "old_pid": old_pid, "pid": kernel.pid, "old_exit_code": rc})
            log(f"  {events[-1]['kind']} {i // 2 + 1}/{deploys}: "
                f"{events[-1]['end_wall'] - events[-1]['start_wall']:.0f} ms")
            time.sleep(spacing_s)
            last_status = reader.read() or last_status
    finally:
        slog.stop()
        rc = kernel.stop()
        try:
            boundaries.append((ledger_meta_clock(state), kernel.pid))
        except sqlite3.Error:
            pass
    run_s = time.monotonic() - t_run

    rows = ledger_rows(state, "SELECT slot, candle_ms, started_ms, lag_ms, lock_wait_us FROM cycles "
                              "WHERE started_ms IS NOT NULL ORDER BY started_ms")

    # Map every cycle start to wall time with the fit of the process that ran it.
    def pid_of(sim: int) -> int:
        for last_sim, pid in boundaries:
            if last_sim is None or sim <= last_sim:
                return pid
        return boundaries[-1][1]

    cyc = []  # (wall start, slot, candle_ms, lag wall ms, lock wait us)
    unmapped = 0
    for slot, candle, started, lag, lw in (tuple(r.values()) for r in rows):
        a = slog.fit.get(pid_of(started))
        if a is None:
            unmapped += 1
            continue
        cyc.append(((started - a) / speed, slot, candle, (lag or 0) / speed, lw or 0))
    cyc.sort()
    starts = [c[0] for c in cyc]

    # Gaps between consecutive cycle starts; the normal ones: those before the first deploy
    # that are longer than a tick (the gaps between candle-close bursts).
    gaps = [(starts[k], starts[k + 1]) for k in range(len(starts) - 1)]
    # Normal gaps: those longer than a tick (between candle-close bursts, not within one) that
    # overlap no deploy (from its start to its end), over the whole run.
    windows = [(ev["start_wall"], ev["end_wall"]) for ev in events]
    base_gaps = [b - a for a, b in gaps if b - a > tick_ms and a >= starts[0]
                 and not any(a < e and b > s for s, e in windows)]
    normal = stats(base_gaps, 1)

    # Ledger gaps: candles of a slot that got no cycle (the close interval skipped).
    by_slot: dict[str, list[tuple[int, float]]] = {}
    for w, slot, candle, _, _ in cyc:
        by_slot.setdefault(slot, []).append((candle, w))
    holes: list[tuple[float, int]] = []  # (wall of the cycle after the hole, candles missing)
    for slot, lst in by_slot.items():
        lst.sort()
        tf = tf_of.get(slot)
        for (c0, _), (c1, w1) in zip(lst, lst[1:]):
            if tf and c1 - c0 > tf:
                holes.append((w1, (c1 - c0) // tf - 1))

    for k, ev in enumerate(events):
        s, e = ev["start_wall"], ev["end_wall"]
        nxt = events[k + 1]["start_wall"] if k + 1 < len(events) else float("inf")
        over = [(a, b) for a, b in gaps if a < e and b > s]
        if not over:  # no start at all around it: take the gap that contains s
            over = [(a, b) for a, b in gaps if a <= s <= b]
        longest = max((b - a for a, b in over), default=None)
        ev["longest_gap_ms"] = round(longest, 1) if longest is not None else None
        ev["excess_over_normal_ms"] = round(longest - normal["p50"], 1) if (longest is not None and normal["p50"]) else None
        after = [c for c in cyc if s <= c[0] < nxt]
        window = [c for c in cyc if s <= c[0] <= e + (normal["p50"] or 0) * 2]
        ev["max_lag_wall_ms_after"] = round(max((c[3] for c in window), default=0), 1)
        ev["max_cycle_lock_wait_us"] = max((c[4] for c in cyc if s <= c[0] <= e), default=0)
        ev["cycles_in_window"] = len([c for c in cyc if s <= c[0] <= e])
        before_c = slog.counters_at(s, after=False)
        after_c = slog.counters_at(nxt if nxt != float("inf") else e + spacing_s * 1000 * 0.9, after=False)
        if before_c and after_c:
            ev["missed_delta"], ev["late_delta"] = after_c[0] - before_c[0], after_c[1] - before_c[1]
        ev["ledger_hole_candles"] = sum(n for w, n in holes if s <= w < nxt)
        if ev["kind"] == "restart":
            first_new = next((c[0] for c in after if c[0] >= ev["ready_wall"] - 5), None)
            last_old = max((x for x in starts if x <= s), default=None)
            ev["term_to_exit_ms"] = round(ev["exit_wall"] - s, 1)
            ev["term_to_running_ms"] = round(ev["ready_wall"] - s, 1)
            ev["exit_to_running_ms"] = round(ev["ready_wall"] - ev["exit_wall"], 1)
            ev["term_to_first_cycle_ms"] = round(first_new - s, 1) if first_new else None
            ev["last_cycle_before_term_ms"] = round(s - last_old, 1) if last_old else None
        else:
            ev["write_to_result_ms"] = round(e - s, 1)
            # The first cycle that starts after the reload's result was seen, from the write.
            first_after = next((x for x in starts if x >= e), None)
            ev["write_to_first_cycle_after_result_ms"] = round(first_after - s, 1) if first_after else None

    def col(kind: str, key: str) -> list:
        return [ev[key] for ev in events if ev["kind"] == kind and ev.get(key) is not None]

    hot = {k: stats(col("hot_reload", k), 1) for k in
           ("longest_gap_ms", "excess_over_normal_ms", "write_to_result_ms", "max_lag_wall_ms_after",
            "max_cycle_lock_wait_us")}
    hot["swap_lock_wait_ms"] = stats(col("hot_reload", "swap_lock_wait_ms"), 4)
    rst = {k: stats(col("restart", k), 1) for k in
           ("longest_gap_ms", "excess_over_normal_ms", "term_to_exit_ms", "exit_to_running_ms", "term_to_running_ms",
            "term_to_first_cycle_ms", "max_lag_wall_ms_after")}
    for d, kind in ((hot, "hot_reload"), (rst, "restart")):
        d["missed_cycles"] = sum(col(kind, "missed_delta"))
        d["late_cycles"] = sum(col(kind, "late_delta"))
        d["ledger_hole_candles"] = sum(col(kind, "ledger_hole_candles"))
        d["deploys"] = len([e for e in events if e["kind"] == kind])
    hot["reload_results"] = {r: col("hot_reload", "result").count(r) for r in set(col("hot_reload", "result"))}

    def ratio(x, y):
        return round(x / y, 1) if (x is not None and y) else None

    # The kernel's own blind window for a hot reload: the longest lock wait of any cycle while a
    # reload was in flight (µs), floored at 1 µs (the ledger's resolution) for the ratio.
    hot_kernel_blind_ms = max(hot["max_cycle_lock_wait_us"]["max"] or 0, 1) / 1000.0
    summary = {
        "slots": n_slots, "speed": speed, "tick_ms": tick_ms, "launcher": launcher, "strategy": strategy,
        "close_interval_wall_ms": {"5m": round(300_000 / speed, 1), "15m": round(900_000 / speed, 1)},
        "normal_gap_ms": normal,
        "hot_reload": hot,
        "restart": rst,
        "ratio_restart_over_hot": {
            "longest_gap_p50": ratio(rst["longest_gap_ms"]["p50"], hot["longest_gap_ms"]["p50"]),
            "excess_p50": ratio(rst["excess_over_normal_ms"]["p50"], max(hot["excess_over_normal_ms"]["p50"] or 0, 1.0)),
            "kernel_blind_window_p50": ratio(rst["term_to_running_ms"]["p50"], hot_kernel_blind_ms),
        },
        "hot_kernel_blind_window_ms_max": hot_kernel_blind_ms,
        "cycles": len(cyc), "cycles_unmapped": unmapped,
        "kernel_exit_code": rc, "run_s": round(run_s, 1),
    }
    if keep:
        summary["state_dir"] = str(state)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    for ev in events:
        for k in ("start_wall", "end_wall", "exit_wall", "ready_wall", "ready_seen_wall"):
            if k in ev:
                ev[k] = round(ev[k], 1)
    return {"summary": summary, "events": events,
            "baseline_gaps_ms": [round(g, 1) for g in base_gaps]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slots", default="16,1000")
    p.add_argument("--speed", default="1000,150", help="one value or one per slot count (default 1000,150)")
    p.add_argument("--tick-ms", type=int, default=100)
    p.add_argument("--deploys", type=int, default=None, help="hot reloads and restarts each (default 10; 3 with --quick)")
    p.add_argument("--strategy", default="ema_cross")
    p.add_argument("--baseline-s", type=float, default=None, help="default 20 (5 with --quick)")
    p.add_argument("--spacing", default="3,8", help="seconds between deploys, one or one per slot count (default 3,8)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--launcher", choices=LAUNCHERS, default="runkernel")
    p.add_argument("--name", default=None)
    a = p.parse_args(argv)
    counts = [int(x) for x in a.slots.split(",") if x.strip()]

    def per(v: str) -> list[float]:
        xs = [float(x) for x in v.split(",") if x.strip()]
        xs = xs * len(counts) if len(xs) == 1 else xs
        if len(xs) != len(counts):
            p.error("--speed/--spacing take one value or one per slot count")
        return xs

    speeds, spacings = per(a.speed), per(a.spacing)
    deploys = a.deploys if a.deploys is not None else (3 if a.quick else 10)
    baseline_s = a.baseline_s if a.baseline_s is not None else (5.0 if a.quick else 20.0)
    name = a.name or (f"{NAME}_quick" if a.quick else NAME)
    machine = machine_info()
    runs = [run_one(n, speed=s, tick_ms=a.tick_ms, deploys=deploys, strategy=a.strategy, baseline_s=baseline_s,
                    spacing_s=sp, keep=a.keep, launcher=a.launcher)
            for n, s, sp in zip(counts, speeds, spacings)]

    rows = []
    for r in runs:
        s = r["summary"]
        for kind in ("hot_reload", "restart"):
            d = s[kind]
            rows.append([s["slots"], kind, d["deploys"], s["normal_gap_ms"]["p50"], d["longest_gap_ms"]["p50"],
                         d["longest_gap_ms"]["max"], d["excess_over_normal_ms"]["p50"],
                         d.get("term_to_running_ms", {}).get("p50") if kind == "restart" else None,
                         d.get("term_to_first_cycle_ms", {}).get("p50") if kind == "restart" else None,
                         d["max_cycle_lock_wait_us"]["max"] if kind == "hot_reload" else None,
                         d["missed_cycles"], d["late_cycles"], d["ledger_hole_candles"]])
    table = format_table(["slots", "deploy", "n", "normal gap p50", "longest gap p50", "longest gap max",
                          "excess p50", "TERM->running p50", "TERM->1st cycle p50", "lock wait max us",
                          "missed", "late", "ledger holes"], rows)
    rows2 = [[r["summary"]["slots"], *r["summary"]["ratio_restart_over_hot"].values()] for r in runs]
    table2 = format_table(["slots", "ratio longest gap", "ratio excess (hot floored at 1 ms)",
                           "ratio TERM->running / max lock wait"], rows2)
    summary = {"runs": [r["summary"] for r in runs],
               "targets": {"zero missed cycles during reloads": all(r["summary"]["hot_reload"]["missed_cycles"] == 0
                                                                   for r in runs)}}
    emit(name, {"summary": summary, "machine": machine,
                "events": {str(r["summary"]["slots"]): r["events"] for r in runs},
                "baseline_gaps_ms": {str(r["summary"]["slots"]): r["baseline_gaps_ms"] for r in runs}},
         ["deploy blind window, wall-clock ms (gap = between consecutive cycle starts overlapping the deploy; "
          "normal = between close bursts, overlapping no deploy)\n\n" + table,
          "restart / hot reload\n\n" + table2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
