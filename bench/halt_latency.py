"""Halt latency: from the control.json write to the kernel's halt, in ms and in ticks.

For each tick period (100 ms, the default, and 10 ms):

1. a real kernel (``manage.py runkernel --demo``: the 16-slot reference deployment) on a temp
   state dir, at ``--speed`` 3000 by default, so that candle closes come every tick or so and
   cycles (and their orders) are in flight when the halt lands;
2. ``--halts`` times: after a random pause (so the write lands at a random point of a tick),
   the halt is written the way kernelctl writes it (``kernel.control_client.halt``: lock, temp file,
   fsync, rename, fsync the folder). The write instant is the moment the rename of
   control.json is issued, taken with ``time.monotonic_ns()`` by wrapping ``os.replace`` in this
   process (the kernel cannot see the halt before it; the writer call's start and end and the
   rename's return are kept too). Then:

   - *write -> observed*: the kernel's own observation time, ``observed_ns`` of the ledger
     meta ``halt`` (``OrderGate.engage_halt``: ``time.monotonic_ns()`` in the kernel process;
     both processes read the same CLOCK_MONOTONIC, so the difference is meaningful on Linux);
   - *write -> status halted*: when this process, polling status.json every 0.5 ms, first
     reads ``state == "halted"`` (in the file's first bytes: ``state`` is its second key, so
     the probe costs a 256-byte read, never the parse of a status of a thousand slots, which
     would make the measurement wait on the measurer);
   - ticks: each latency divided by the tick period, and the tick index difference
     ``status.cycles.halt_observed_tick`` minus the tick at the write (estimated: status.json
     is published about once a second, so the tick at the write is interpolated between the
     last status before the write and the halted one, by their ``tick`` and ``heartbeat_at``;
     1 = seen at the very next tick);
   - *write -> last order accepted*: ``max(orders.passed_ns)`` minus the write instant
     (negative: the last order passed the gate before the write), and the number of orders
     that passed the gate after the kernel observed the halt (must be 0);

   then ``release`` (with ``halt: false`` in the same write) and ``resume``, each waited for.

With ``--slots N --trading`` the kernel runs N slots of a strategy that flips every candle
(tests/support/strategy_sources.py FLIP: an entry or an exit each cycle; 8 assets, 5m and 15m
alternating), seeded into a fresh ledger, at ``--speed`` 100 unless given (a 5m close every
3 s of wall time, a 15m one, all N slots at once, every 9 s): cycles, orders and fills run
during the halts. The orders and fills booked during the measurement are counted from the
ledger, and the 1-minute load average is recorded at the start and end of each run.

    .venv/bin/python -m bench.halt_latency            # full: 200 halts at 100 ms and at 10 ms
    .venv/bin/python -m bench.halt_latency --quick    # 30 halts each
    .venv/bin/python -m bench.halt_latency --slots 1000 --trading   # issue 16 target 1
"""
from __future__ import annotations

import argparse
import math
import os
import random
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
    histogram,
    log,
    machine_info,
    make_temp_dir,
    start_running,
    stats,
)
from kernel import control_client as commands
from kernel.demo import DEMO_ASSETS, DEMO_TIMEFRAMES
from kernel.protocol import SlotConfig
from tests.support.kernel_process import KernelProcess
from tests.support.ledger_reader import ledger_halt, ledger_rows
from tests.support.slot_seeds import seed_slots
from tests.support.status_reader import StatusReader, iso_to_ms
from tests.support.strategy_folders import copy_repo_strategies
from tests.support.strategy_sources import FLIP
from tests.support.waiting import wait_until

NAME = "halt_latency"


class RenameClock:
    """Record when the rename that publishes ``target`` is issued (``ns``, monotonic;
    ``wall_ns``) and when it returned (``done_ns``). The write instant is ``ns``: the kernel
    cannot see the new file before it, so a latency from it is never understated."""

    def __init__(self, target: Path) -> None:
        self.target = os.path.abspath(target)
        self.ns: int | None = None
        self.done_ns: int | None = None
        self.wall_ns: int | None = None

    def __enter__(self) -> "RenameClock":
        self._orig = os.replace

        def hooked(src, dst, *args, **kwargs):
            if os.path.abspath(os.fspath(dst)) != self.target:
                return self._orig(src, dst, *args, **kwargs)
            self.wall_ns = time.time_ns()
            self.ns = time.monotonic_ns()
            self._orig(src, dst, *args, **kwargs)
            self.done_ns = time.monotonic_ns()

        os.replace = hooked
        return self

    def __exit__(self, *exc) -> None:
        os.replace = self._orig


def wait_halted(path: Path, *, timeout: float, abort) -> int:
    """The monotonic ns at which status.json's first bytes first say ``"state": "halted"``."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        try:
            with open(path, "rb") as f:
                head = f.read(256)
        except FileNotFoundError:
            head = b""
        if b'"state":"halted"' in head or b'"state": "halted"' in head:
            return time.monotonic_ns()
        n += 1
        if n % 200 == 0:
            abort()
            if time.monotonic() > deadline:
                raise TimeoutError(f"status.json did not say halted within {timeout} s")
        time.sleep(0.0005)


def _send_and_wait(state: Path, reader: StatusReader, kernel: KernelProcess, action: str) -> dict:
    cmd = commands.build_command(action, issued_by="bench")
    commands.send(state, cmd)
    res, _, _ = reader.wait_command(cmd.id, timeout=30, abort=kernel.check_alive)
    if res.get("result") != "applied":
        raise RuntimeError(f"{action} was {res.get('result')}: {res.get('error')}")
    return res


def seed_trading(tmp: Path, state: Path, n: int) -> Path:
    """``n`` FLIP slots (an order every cycle) in a fresh ledger; returns the strategies folder."""
    strat_dir = copy_repo_strategies(tmp / "strategies", extra={"flip": FLIP})
    configs = []
    for i in range(n):
        asset = DEMO_ASSETS[(i // len(DEMO_TIMEFRAMES)) % len(DEMO_ASSETS)]
        tf = DEMO_TIMEFRAMES[i % len(DEMO_TIMEFRAMES)]
        configs.append(SlotConfig(id=f"{asset.lower()}-{tf}-{i:05d}", symbol=f"{asset}/USDT", timeframe=tf,
                                  strategy="flip", order_notional=500.0, max_notional=2_000.0))
    seed_slots(state, configs)
    return strat_dir


def _load1() -> float:
    return round(os.getloadavg()[0], 2)


def run_one(tick_ms: int, *, halts: int, speed: float, gap: tuple[float, float], keep: bool,
            seed: int, launcher: str = "runkernel", slots: int | None = None) -> dict:
    rng = random.Random(seed)
    tmp = make_temp_dir(f"fs-bench-halt-{tick_ms}ms-")
    state = tmp / "state"
    state.mkdir()
    control = state / "control.json"
    load_start = _load1()
    if slots:
        log(f"tick {tick_ms} ms, speed {speed:g}, {slots} flip slots (trading), {halts} halts, state {state}")
        kernel = bench_kernel(state, speed=speed, tick_ms=tick_ms, strategies_dir=seed_trading(tmp, state, slots),
                              cash=1e12, launcher=launcher)
    else:
        log(f"tick {tick_ms} ms, speed {speed:g}, 16 demo slots, {halts} halts, state {state}")
        kernel = bench_kernel(state, speed=speed, tick_ms=tick_ms, demo=True, launcher=launcher)
    reader = StatusReader(state, force_s=0.02)
    samples: list[dict] = []
    t_start = time.monotonic()
    first = start_running(kernel, timeout=300)
    try:
        time.sleep(2.0 if not slots else 12.0)  # the first candles close (both timeframes), cycles in flight
        measure_from_ms = time.time_ns() // 1_000_000
        for i in range(halts):
            time.sleep(rng.uniform(*gap))
            pre = reader.read()
            with RenameClock(control) as rc:
                t_call = time.monotonic_ns()
                commands.halt(state, f"bench halt {i}", by="bench")
                t_ret = time.monotonic_ns()
            write_ns = rc.ns if rc.ns is not None else t_call
            seen_ns = wait_halted(state / "status.json", timeout=30, abort=kernel.check_alive)
            st = reader.read() or {}
            # The kernel records the halt in its ledger right after handing over the halted
            # status: wait for that record (this halt's, by its observation instant).
            at_ns = (st.get("halt") or {}).get("observed_at_ns")
            observed_ns = wait_until(
                lambda: (h := ledger_halt(state)).get("observed_at_ns") == at_ns and h.get("observed_ns"),
                timeout=30, what="the halt's ledger record", poll=0.002)
            gate = ledger_rows(state, "SELECT MAX(passed_ns) AS last_pass, SUM(passed_ns > ?) AS after_obs,"
                                      " SUM(passed_ns > ?) AS after_write FROM orders", (observed_ns or 0, write_ns))[0]
            last_pass, after_obs, after_write = gate["last_pass"], gate["after_obs"], gate["after_write"]
            obs_tick = (st.get("cycles") or {}).get("halt_observed_tick")
            # The tick at the write, interpolated between the last status before it (tick t0 at
            # heartbeat b0) and the halted one (tick t1 at b1), at the kernel's actual tick rate.
            tick_at_write = None
            if pre is not None and rc.wall_ns is not None and obs_tick is not None:
                t0, b0 = pre["tick"], iso_to_ms(pre.get("heartbeat_at"))
                t1, b1 = st["tick"], iso_to_ms(st.get("heartbeat_at"))
                w = rc.wall_ns / 1e6
                if b1 > b0 and t1 > t0:
                    tick_at_write = t0 + math.floor((w - b0) / (b1 - b0) * (t1 - t0))
            samples.append({
                "i": i,
                "writer_call_ms": round((t_ret - t_call) / 1e6, 3),
                "rename_ms": round((rc.done_ns - rc.ns) / 1e6, 3) if rc.done_ns else None,
                "write_to_observed_ms": round((observed_ns - write_ns) / 1e6, 3) if observed_ns else None,
                "write_to_status_ms": round((seen_ns - write_ns) / 1e6, 3),
                "observed_to_status_ms": round((seen_ns - observed_ns) / 1e6, 3) if observed_ns else None,
                "halt_observed_tick": obs_tick,
                "tick_at_write_est": tick_at_write,
                "ticks_index_diff": (obs_tick - tick_at_write) if (obs_tick is not None and tick_at_write is not None) else None,
                "status_age_before_write_ms": round(rc.wall_ns / 1e6 - iso_to_ms(pre["heartbeat_at"]), 1) if pre and rc.wall_ns else None,
                "last_order_pass_minus_write_ms": round((last_pass - write_ns) / 1e6, 3) if last_pass else None,
                "orders_passed_after_write": int(after_write or 0),
                "orders_passed_after_observed": int(after_obs or 0),
                "cancelled_orders": len((st.get("halt") or {}).get("cancelled_orders") or []),
            })
            _send_and_wait(state, reader, kernel, "release")
            _send_and_wait(state, reader, kernel, "resume")
            reader.wait(lambda s: s.get("state") == "running", timeout=30, abort=kernel.check_alive,
                        what="status running")
            if (i + 1) % max(1, halts // 10) == 0:
                log(f"  {i + 1}/{halts} halts")
        final = reader.read() or {}
        measure_to_ms = time.time_ns() // 1_000_000
    finally:
        rc_exit = kernel.stop()
    run_s = time.monotonic() - t_start
    load_end = _load1()
    # What traded while the halts were measured, from the ledger itself (not the status).
    booked = ledger_rows(state, "SELECT (SELECT COUNT(*) FROM orders WHERE created_ms BETWEEN ? AND ?) AS orders,"
                                " (SELECT COUNT(*) FROM fills f JOIN orders o USING (client_order_id)"
                                "  WHERE o.created_ms BETWEEN ? AND ?) AS fills,"
                                " (SELECT COUNT(*) FROM cycles WHERE result NOT IN ('halted', 'skipped')) AS cycles_ran",
                         (measure_from_ms, measure_to_ms, measure_from_ms, measure_to_ms))[0]

    def col(key: str) -> list:
        return [s[key] for s in samples if s[key] is not None]

    obs_ms, stat_ms = col("write_to_observed_ms"), col("write_to_status_ms")
    summary = {
        "tick_ms": tick_ms,
        "speed": speed,
        "launcher": launcher,
        "slots": len(final.get("slots") or []),
        "strategy": "flip (an order every cycle)" if slots else "demo (16 reference slots)",
        "orders_during_measurement": booked["orders"],
        "fills_during_measurement": booked["fills"],
        "cycles_ran_ledger": booked["cycles_ran"],
        "traded": bool(booked["orders"]),
        "load1_start": load_start,
        "load1_end": load_end,
        "halts": len(samples),
        "write_to_observed_ms": stats(obs_ms),
        "write_to_status_halted_ms": stats(stat_ms),
        "write_to_observed_ticks": stats([v / tick_ms for v in obs_ms]),
        "write_to_status_halted_ticks": stats([v / tick_ms for v in stat_ms]),
        "observed_within_one_tick": sum(1 for v in obs_ms if v < tick_ms),
        "status_halted_within_one_tick": sum(1 for v in stat_ms if v < tick_ms),
        "tick_index_diff": stats(col("ticks_index_diff"), 0),
        "tick_index_diff_hist": histogram(col("ticks_index_diff"), (1, 2, 3)),
        "observed_to_status_ms": stats(col("observed_to_status_ms")),
        "writer_call_ms": stats(col("writer_call_ms")),
        "last_order_pass_minus_write_ms": stats(col("last_order_pass_minus_write_ms")),
        "orders_passed_after_write": sum(col("orders_passed_after_write")),
        "orders_passed_after_observed": sum(col("orders_passed_after_observed")),
        "orders_total": (final.get("ledger") or {}).get("orders"),
        "cycles_ran": (final.get("cycles") or {}).get("ran"),
        "effective_tick_ms": effective_tick_ms(first, final),
        "kernel_exit_code": rc_exit,
        "run_s": round(run_s, 1),
    }
    if keep:
        summary["state_dir"] = str(state)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"summary": summary, "halts": samples}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--halts", type=int, default=None, help="halts per tick period (default 200; 30 with --quick)")
    p.add_argument("--tick-ms", default="100,10", help="comma-separated tick periods (default 100,10)")
    p.add_argument("--speed", type=float, default=None,
                   help="clock speed (default 3000; 100 with --trading)")
    p.add_argument("--slots", type=int, default=None, help="with --trading: this many flip slots instead of the demo")
    p.add_argument("--trading", action="store_true",
                   help="slots that trade every cycle (FLIP), seeded fresh; needs --slots")
    p.add_argument("--gap", default="0.05,0.25", help="random pause before each halt, min,max seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="30 halts per tick period")
    p.add_argument("--keep", action="store_true", help="keep the temp state dirs")
    p.add_argument("--launcher", choices=LAUNCHERS, default="runkernel",
                   help="runkernel: manage.py runkernel (default); direct: the same command without "
                        "django.setup() (python -m kernel)")
    p.add_argument("--name", default=None, help=f"results file name (default {NAME}, {NAME}_quick)")
    a = p.parse_args(argv)
    if a.trading != bool(a.slots):
        p.error("--trading and --slots N go together")
    speed = a.speed if a.speed is not None else (100.0 if a.trading else 3000.0)
    ticks = [int(x) for x in a.tick_ms.split(",") if x.strip()]
    halts = a.halts if a.halts is not None else (30 if a.quick else 200)
    gap = tuple(float(x) for x in a.gap.split(","))
    if len(gap) != 2 or gap[0] < 0 or gap[1] < gap[0]:
        p.error("--gap takes min,max seconds")
    name = a.name or (f"{NAME}_trading{a.slots}" if a.trading else NAME) + ("_quick" if a.quick else "")

    machine = machine_info()
    runs = [run_one(t, halts=halts, speed=speed, gap=gap, keep=a.keep, seed=a.seed, launcher=a.launcher,
                    slots=a.slots if a.trading else None)
            for t in ticks]

    rows = []
    for r in runs:
        s = r["summary"]
        o, w, ot, wt = (s["write_to_observed_ms"], s["write_to_status_halted_ms"],
                        s["write_to_observed_ticks"], s["write_to_status_halted_ticks"])
        rows.append([s["tick_ms"], s["halts"], o["p50"], o["p99"], o["max"], ot["p99"], ot["max"],
                     w["p50"], w["p99"], w["max"], wt["p99"], wt["max"], s["tick_index_diff"]["max"],
                     s["writer_call_ms"]["p50"], s["orders_passed_after_observed"], s["slots"],
                     s["orders_during_measurement"], f'{s["load1_start"]}-{s["load1_end"]}'])
    table = format_table(
        ["tick ms", "halts", "obs p50 ms", "obs p99 ms", "obs max ms", "obs p99 ticks", "obs max ticks",
         "status p50 ms", "status p99 ms", "status max ms", "status p99 ticks", "status max ticks",
         "tick idx max", "write call ms", "orders after obs", "slots", "orders booked", "load1"], rows)
    summary = {"runs": [r["summary"] for r in runs],
               "target": "write -> observed p99 < 1 tick; write -> status.json halted p99 < 2 ticks",
               "target_met": {str(r["summary"]["tick_ms"]): (r["summary"]["write_to_observed_ticks"]["p99"] or 0) < 1
                              for r in runs},
               "status_target_met": {str(r["summary"]["tick_ms"]):
                                     (r["summary"]["write_to_status_halted_ticks"]["p99"] or 0) < 2 for r in runs}}
    emit(name, {"summary": summary, "machine": machine,
                "halts": {str(r["summary"]["tick_ms"]): r["halts"] for r in runs}},
         ["halt latency: control.json write -> kernel observed (obs, ledger meta halt.observed_ns) "
          "and -> status.json says halted (status)\n"
          "(ticks = latency / tick period; tick idx = halt_observed_tick - estimated tick at the write)\n\n"
          + table])
    return 0


if __name__ == "__main__":
    sys.exit(main())
