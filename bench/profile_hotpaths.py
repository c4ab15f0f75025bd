"""Where the time goes: pyinstrument profiles of a cycle burst, of the tick thread folding a
burst in, of a hot reload, and of the status endpoint.

In this process (pyinstrument samples the thread it was started on, so each piece of work is
run on the profiled thread):

1. **cycles**: a ``Kernel`` (in process, ``ManualClock``) on a temp state dir with ``--slots``
   slots written beforehand (``bench.harness.seed_bench_slots``: the three shipped strategies round
   robin); the clock is moved to a 15m close and every slot's cycle (``Cycles.run_cycle``, what a
   worker runs) is called one after the other, ``--rounds`` closes;
2. **tick**: the tick thread's share of the same work: the outcomes of those cycles are folded
   in (``Cycles.drain_outcomes``), persisted (``Cycles.persist``) and status.json published
   (``StatusReport.publish``);
3. **reload**: ``--reloads`` hot reloads of ema_cross (``Reloader.reload_one``, the work of the
   reload thread: load the new version, check it, smoke evaluation, swap), each after a rewrite
   of the file so that every one is a real swap;
4. **status endpoint** (``--skip-console`` to leave it out): ``GET /api/kernels/demo`` with a
   bearer token, ``--requests`` times through Django's test client, against a file SQLite DB
   and a running demo kernel (as bench/console_load.py sets it up).

Each profile is written as text to ``bench/results/profile_<part>.txt`` (and HTML next to it);
the summary (top functions by self time and by cumulative time in project code, with their
share of the part's wall time) goes to the JSON line and ``bench/results/profile_hotpaths.json``.

    .venv/bin/python -m bench.profile_hotpaths            # 1,000 slots, 5 rounds, 20 reloads
    .venv/bin/python -m bench.profile_hotpaths --quick    # 1,000 slots, 2 rounds, 5 reloads
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import time
from collections import defaultdict

from pyinstrument import Profiler

from bench.harness import (
    RESULTS_DIR,
    bench_kernel,
    emit,
    format_table,
    log,
    machine_info,
    make_temp_dir,
    seed_bench_slots,
    start_running,
)
from kernel.control import atomic_write_text
from tests.support.strategy_folders import copy_repo_strategies

NAME = "profile_hotpaths"
INTERVAL_S = 0.0005


def top_functions(session, n: int = 12) -> dict:
    """Self time and cumulative time per function (file:function), as shares of the whole."""
    self_t: dict[str, float] = defaultdict(float)
    cum_t: dict[str, float] = defaultdict(float)
    total = session.duration or 1e-9

    def key(frame) -> str:
        path = frame.file_path_short or frame.file_path or "?"
        return f"{path}:{frame.function}"

    def walk(frame, on_stack: frozenset) -> None:
        k = key(frame)
        self_t[k] += frame.total_self_time
        if k not in on_stack:  # recursion counted once
            cum_t[k] += frame.time
        for child in frame.children:
            walk(child, on_stack | {k})

    root = session.root_frame()
    if root is not None:
        walk(root, frozenset())

    def fmt(d: dict, only_project: bool) -> list:
        items = sorted(d.items(), key=lambda kv: -kv[1])
        if only_project:
            items = [kv for kv in items if any(p in kv[0] for p in ("kernel/", "strategies/", "trading/"))]
        return [{"function": k, "s": round(v, 4), "share": round(v / total, 3)} for k, v in items[:n]]

    return {"wall_s": round(total, 3), "self": fmt(self_t, False), "cumulative_project": fmt(cum_t, True)}


def save(profiler: Profiler, part: str) -> dict:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"profile_{part}.txt").write_text(
        profiler.output_text(unicode=False, color=False, show_all=False), encoding="utf-8")
    (RESULTS_DIR / f"profile_{part}.html").write_text(profiler.output_html(), encoding="utf-8")
    return top_functions(profiler.last_session)


class _Job:  # what Cycles.run_cycle needs of a worker's Job (orders check ``abandoned``)
    abandoned = False
    started_wall = None


def profile_kernel(n_slots: int, rounds: int, reloads: int) -> dict:
    from kernel.clock import ManualClock
    from kernel.kernel import Kernel, KernelOptions

    tmp = make_temp_dir("fs-bench-profile-")
    state = tmp / "state"
    state.mkdir()
    strat = copy_repo_strategies(tmp / "strategies")
    seed_bench_slots(state, n_slots)
    tf15 = 900_000
    clock = ManualClock(start_ms=(time.time_ns() // 1_000_000 // tf15) * tf15 + 1_000)
    k = Kernel(KernelOptions(state_dir=state, strategies_dir=strat, cash=1e12, workers=2), clock=clock)
    out: dict = {}
    try:
        prof_c, prof_t = Profiler(interval=INTERVAL_S), Profiler(interval=INTERVAL_S)
        n_cycles = 0
        for _ in range(rounds):
            clock.jump(tf15)
            close = (clock.now_ms() // tf15) * tf15
            prof_c.start()
            for s in list(k.slots.values()):
                o = k.cycles.run_cycle(_Job(), s.config, close, dict(s.strategy_state), s.state_schema)
                k.cycles.outcomes.put(o)
                n_cycles += 1
            prof_c.stop()
            prof_t.start()
            k.cycles.drain_outcomes()
            k.cycles.persist()
            k.status.publish()
            k.status_writer.flush() if hasattr(k.status_writer, "flush") else None
            prof_t.stop()
        out["cycles"] = {**save(prof_c, "cycles"), "cycles": n_cycles,
                         "us_per_cycle": round(prof_c.last_session.duration / 0 if False else
                                               1e6 * sum_durations(prof_c) / n_cycles, 1)}
        out["tick"] = {**save(prof_t, "tick"), "rounds": rounds,
                       "ms_per_round": round(1e3 * sum_durations(prof_t) / rounds, 1)}
        target = strat / "ema_cross.py"
        original = target.read_text(encoding="utf-8")
        prof_r = Profiler(interval=INTERVAL_S)
        results = []
        for i in range(reloads):
            atomic_write_text(target, original + f"\n# profile {i}\n")
            samples = k.reloader.smoke_samples("ema_cross")
            prof_r.start()
            r = k.reloader.reload_one("ema_cross", samples, None)
            prof_r.stop()
            k.reloader.after_reload(r)
            results.append(r["result"])
        out["reload"] = {**save(prof_r, "reload"), "reloads": reloads,
                         "ms_per_reload": round(1e3 * sum_durations(prof_r) / reloads, 1),
                         "results": {x: results.count(x) for x in set(results)}}
    finally:
        k.stop()
        try:
            k.shutdown()
        except Exception as exc:  # noqa: BLE001
            log(f"kernel shutdown: {exc}")
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def sum_durations(profiler: Profiler) -> float:
    return profiler.last_session.duration if profiler.last_session else 0.0


def profile_status_endpoint(requests: int) -> dict:
    tmp = make_temp_dir("fs-bench-profile-console-")
    state = tmp / "state"
    state.mkdir()
    os.environ.update(DATABASE_URL=f"sqlite:///{tmp / 'console.sqlite3'}", FORESIGHT_ENV="production",
                      FORESIGHT_SSL_REDIRECT="false",  # plain HTTP on loopback: no TLS in front
                      FORESIGHT_SECRET_KEY=secrets.token_urlsafe(40), FORESIGHT_STATE_DIR=str(state),
                      FORESIGHT_AUDIT_SPOOL=str(tmp / "audit-spool.jsonl"), FORESIGHT_LOG_LEVEL="WARNING",
                      DJANGO_SETTINGS_MODULE="foresight_site.settings")
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from trading import services

    kernel = bench_kernel(state, speed=60, tick_ms=100, demo=True)
    try:
        call_command("migrate", verbosity=0, interactive=False)
        start_running(kernel)
        call_command("addkernel", name="demo", state_dir=str(state), verbosity=0)
        user = get_user_model().objects.create_superuser("bench", "bench@localhost", "bench-password-123")
        _, raw = services.token_create(user=user, name="bench")
        c = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert c.get("/api/kernels/demo").status_code == 200
        prof = Profiler(interval=INTERVAL_S)
        prof.start()
        codes = [c.get("/api/kernels/demo").status_code for _ in range(requests)]
        prof.stop()
        return {**save(prof, "status_endpoint"), "requests": requests,
                "ms_per_request": round(1e3 * prof.last_session.duration / requests, 2),
                "non_200": sum(1 for x in codes if x != 200)}
    finally:
        kernel.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slots", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=None, help="15m closes profiled (default 5; 2 with --quick)")
    p.add_argument("--reloads", type=int, default=None, help="default 20; 5 with --quick")
    p.add_argument("--requests", type=int, default=None, help="status endpoint requests (default 200; 50 quick)")
    p.add_argument("--skip-console", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--name", default=None)
    a = p.parse_args(argv)
    rounds = a.rounds or (2 if a.quick else 5)
    reloads = a.reloads or (5 if a.quick else 20)
    requests = a.requests or (50 if a.quick else 200)
    name = a.name or (f"{NAME}_quick" if a.quick else NAME)
    machine = machine_info()
    log(f"profile: {a.slots} slots, {rounds} closes, {reloads} reloads")
    parts = profile_kernel(a.slots, rounds, reloads)
    if not a.skip_console:
        log(f"profile: status endpoint, {requests} requests")
        parts["status_endpoint"] = profile_status_endpoint(requests)
    tables = []
    for part, d in parts.items():
        rows = [[x["function"], x["s"], f"{100 * x['share']:.1f} %"] for x in d["self"][:10]]
        rows2 = [[x["function"], x["s"], f"{100 * x['share']:.1f} %"] for x in d["cumulative_project"][:10]]
        per = {k: v for k, v in d.items() if k not in ("self", "cumulative_project")}
        tables.append(f"{part}: {per}\n\n" + format_table(["self time: function", "s", "share"], rows)
                      + "\n\n" + format_table(["cumulative (project code): function", "s", "share"], rows2))
    emit(name, {"summary": {"slots": a.slots, "parts": parts}, "machine": machine}, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
