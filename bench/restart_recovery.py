"""Restart recovery: SIGKILL a kernel running N slots (1,000 by default), start the same command
again at once on the same state dir (``python -m kernel``: no Django), and time the new
kernel's way back, beside a hot reload of the same kernel.

Per kill, in wall-clock ms from the SIGKILL:

- *ready*: the new process's first status.json (its own ``heartbeat_at``): it has imported,
  opened the ledger, reconciled, loaded every slot and its strategy versions, and ticked once:
  from there it starts any cycle that falls due;
- *first cycle*: the first cycle the new process started (ledger ``cycles.started_ms``, mapped to
  wall time with that process's first (``clock_at``, ``heartbeat_at``) pair), and the part of it
  schedules from the next close after its boot (closes missed while down are counted missed),
  so this also waits for that close (up to one 5m candle: 5 s of wall time at speed 60);
- *its first cycle's lag*: that cycle's close → start (ledger ``lag_ms``), i.e. whether the new
  kernel starts its first cycles as promptly as a warm one.

Hot reload beside it: ``reload`` of the strategy (rewritten with a new comment) written to
control.json → its result in status.json, and the longest wait of a cycle for the reload lock
(bench/deploy_blind_window.py measures the blind windows of both in depth).

The kernel runs at ``--speed`` (60: a 5m candle closes every 5 s of wall time) with paper
orders; whether it traded is counted from the ledger at the end.

    .venv/bin/python -m bench.restart_recovery            # 10 kills + 10 reloads, 1,000 slots
    .venv/bin/python -m bench.restart_recovery --quick    # 3 + 3
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from bench.harness import bench_kernel, emit, format_table, log, machine_info, make_temp_dir, seed_bench_slots, \
    start_running, stats
from kernel.control import append_commands, atomic_write_text
from kernel.control_client import build_command
from tests.support.ledger_reader import ledger_rows
from tests.support.status_reader import StatusReader, done_ids, iso_to_ms
from tests.support.strategy_folders import copy_repo_strategies
from tests.support.waiting import wait_until

NAME = "restart_recovery"
TARGET_MS = 500.0


def first_cycle_after(state, clock_ms: int) -> dict | None:
    rows = ledger_rows(state, "SELECT started_ms, lag_ms FROM cycles WHERE started_ms >= ? "
                              "ORDER BY started_ms LIMIT 1", (clock_ms,))
    return rows[0] if rows else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slots", type=int, default=1000)
    p.add_argument("--kills", type=int, default=None, help="kills and reloads each (default 10; 3 with --quick)")
    p.add_argument("--speed", type=float, default=60.0)
    p.add_argument("--tick-ms", type=int, default=50)
    p.add_argument("--strategy", default="ema_cross")
    p.add_argument("--spacing", type=float, default=3.0, help="seconds of undisturbed running between events")
    p.add_argument("--launcher", default="direct", choices=("direct", "runkernel"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)
    kills = a.kills or (3 if a.quick else 10)
    machine = machine_info()
    tmp = make_temp_dir("fs-bench-restart-")
    state = tmp / "state"
    state.mkdir()
    strat_dir = copy_repo_strategies(tmp / "strategies")
    target = strat_dir / f"{a.strategy}.py"
    original = target.read_text(encoding="utf-8")
    seed_bench_slots(state, a.slots)

    def new_kernel():
        return bench_kernel(state, speed=a.speed, tick_ms=a.tick_ms, strategies_dir=strat_dir, cash=1e12,
                            launcher=a.launcher)

    log(f"restart recovery: {a.slots} slots, {a.launcher}, speed {a.speed:g}, tick {a.tick_ms} ms, "
        f"{kills} kills + {kills} reloads, state {state}")
    kernel = new_kernel()
    start_running(kernel)
    reader = StatusReader(state, force_s=0.05)
    kills_out: list[dict] = []
    reloads_out: list[dict] = []
    try:
        time.sleep(a.spacing)
        for i in range(kills):
            # (a) hot reload
            last = reader.read()
            atomic_write_text(target, original + f"\n# bench restart_recovery {i}\n")
            cmd = build_command("reload", args={"strategy": a.strategy}, issued_by="bench")
            t0 = time.time() * 1000
            append_commands(state, [cmd], prune_ids=done_ids(last))
            res, _, _ = reader.wait_command(cmd.id, timeout=60, abort=kernel.check_alive)
            per = ((res.get("detail") or {}).get("strategies") or [{}])[0]
            reloads_out.append({"command_to_result_ms": round(time.time() * 1000 - t0, 1),
                                "result": per.get("result") or res.get("result"),
                                "swap_lock_wait_ms": per.get("lock_wait_ms")})
            time.sleep(a.spacing)
            # (b) SIGKILL and the same command again at once
            old_pid = kernel.pid
            t_kill = time.time() * 1000
            kernel.kill9()
            kernel = new_kernel()
            kernel.start(wait=True, timeout=120, ready=lambda s: s.get("state") == "running")
            first = kernel.first_status
            ready_ms = iso_to_ms(first["heartbeat_at"]) - t_kill
            clock0 = iso_to_ms(first["clock_at"])
            cyc = wait_until(lambda: first_cycle_after(state, clock0), timeout=120, poll=0.05,
                             what="the new kernel's first cycle", abort=kernel.check_alive)
            first_cycle_ms = iso_to_ms(first["heartbeat_at"]) + (cyc["started_ms"] - clock0) / a.speed - t_kill
            close_wait_ms = (cyc["lag_ms"] or 0) / a.speed  # its close → its start
            kills_out.append({"old_pid": old_pid, "pid": kernel.pid, "ready_ms": round(ready_ms, 1),
                              "first_cycle_ms": round(first_cycle_ms, 1),
                              "first_cycle_lag_after_close_ms": round(close_wait_ms, 1)})
            log(f"  kill {i + 1}/{kills}: ready {ready_ms:.0f} ms, first cycle {first_cycle_ms:.0f} ms; "
                f"reload {reloads_out[-1]['command_to_result_ms']:.0f} ms")
            time.sleep(a.spacing)
        traded = {t: ledger_rows(state, f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] for t in ("orders", "fills")}
    finally:
        kernel.stop()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    ready = stats(k["ready_ms"] for k in kills_out)
    first_cycle = stats(k["first_cycle_ms"] for k in kills_out)
    lag = stats(k["first_cycle_lag_after_close_ms"] for k in kills_out)
    reload_ms = stats(r["command_to_result_ms"] for r in reloads_out)
    lock_wait = stats(r["swap_lock_wait_ms"] for r in reloads_out)
    rows = [["SIGKILL → new kernel ready (first tick)", ready.get("p50"), ready.get("max")],
            ["SIGKILL → its first cycle (incl. the wait for a close)", first_cycle.get("p50"), first_cycle.get("max")],
            ["its first cycle: close → start", lag.get("p50"), lag.get("max")],
            ["hot reload: command → result", reload_ms.get("p50"), reload_ms.get("max")],
            ["hot reload: longest reload-lock wait", lock_wait.get("p50"), lock_wait.get("max")]]
    summary = {
        "slots": a.slots, "launcher": a.launcher, "speed": a.speed, "tick_ms": a.tick_ms, "kills": kills,
        "loadavg_1m_start": machine["loadavg_at_start"][0], "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "ledger_orders": traded["orders"], "ledger_fills": traded["fills"],
        "ready_ms": ready, "first_cycle_ms": first_cycle, "first_cycle_lag_after_close_ms": lag,
        "reload_command_to_result_ms": reload_ms,
        "reload_lock_wait_ms": lock_wait,
        "target": f"SIGKILL → the new kernel ready to run its first cycle under {TARGET_MS:g} ms with 1,000 slots",
        "target_met": bool(a.slots >= 1000 and ready.get("max") is not None and ready["max"] < TARGET_MS),
    }
    emit(NAME + ("_quick" if a.quick else ""), {"summary": summary, "kills": kills_out, "reloads": reloads_out,
                                                 "machine": machine},
         [f"restart recovery, {a.slots} slots ({a.launcher}; {traded['orders']} orders, {traded['fills']} fills "
          f"in the ledger; load {summary['loadavg_1m_start']} → {summary['loadavg_1m_end']})\n\n"
          + format_table(["wall ms", "p50", "max"], rows)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
