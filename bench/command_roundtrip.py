"""Command round trip: API call → kernel applied → audit outcome recorded, p50/p99, with the
embedded (eager) delivery and with Redis + a Celery worker.

For each mode, on a fresh SQLite console database and a real kernel (``runkernel --demo``,
100 ms ticks) on a temp state dir:

- **eager**: no REDIS_URL. The API request delivers the command into control.json itself,
  on commit; ``manage.py syncstatus --loop`` (the demo's sync) records the outcome.
- **redis**: REDIS_URL set, a ``redis-server`` on a free port (no persistence), the kernel
  registered with queue ``host-a``. The API request publishes a delivery task; a ``celery
  worker -Q host-a,host-a.halt`` writes control.json; ``celery beat`` has that worker sync
  the host (``sync_host_kernels``) every ``--sync-interval`` and record the outcome.

A driver process (Django, the same settings as the web process) then issues ``--commands``
commands one at a time through the real API (``POST /api/kernels/<k>/pause`` or ``resume``,
Django's test client, an Operator's token, no ``?wait``), and for each takes wall-clock
times (the database and the kernel stamp wall-clock time; all processes share the clock):

- *api*: the request's own duration (202 returned);
- *delivered*: the row's ``delivered_at`` (control.json written) minus the call's start;
- *applied*: the kernel's result time (status.json ``commands[].at``) minus the call's start;
- *audited*: when the driver, polling the database every 2 ms, first sees the
  ``command.applied`` audit event, minus the call's start: the whole round trip.

The sync interval bounds *applied → audited*: it is the same (1.0 s, the default of
``syncstatus --loop`` and of FORESIGHT_SYNC_INTERVAL_S) in both modes unless changed. Commands
go one at a time; the pause before each is random over one sync interval (``--gap``), so a
command lands at a random point of the sync cycle (a fixed short pause would start every
command just after a sync, and the round trip would measure the whole interval every time).

    .venv/bin/python -m bench.command_roundtrip            # 200 commands per mode
    .venv/bin/python -m bench.command_roundtrip --quick    # 30 per mode
    .venv/bin/python -m bench.command_roundtrip --modes redis --sync-interval 0.2

Prints a table, then the summary as one JSON line (last line of stdout); everything,
samples included, goes to bench/results/command_roundtrip.json (``_quick`` with --quick).
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import (
    bench_kernel,
    emit,
    format_table,
    log,
    machine_info,
    make_temp_dir,
    start_running,
    stats,
)
from tests.support.checkout import REPO
from tests.support.ports import free_port
from tests.support.processes import clean_env, kill_group, log_tail, spawn
from tests.support.waiting import wait_until

NAME = "command_roundtrip"
PHASES = ("api", "delivered", "applied", "audited")

DRIVER = r"""
import json, os, random, sys, time
from pathlib import Path
import django
django.setup()
from django.contrib.auth.models import Group, User
from django.test import Client
from trading import services
from trading.models import AuditEvent, ControlCommand
from tests.support.waiting import wait_until

opts = json.loads(sys.argv[1])
user = User.objects.create_user("bench")
user.groups.add(Group.objects.get(name="Operator"))
token = services.token_create(user=user, name="bench")[1]
client = Client()
rng = random.Random(opts["seed"])
samples = []


def iso_s(value):
    from datetime import datetime
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


for i in range(opts["warmup"] + opts["commands"]):
    action = "pause" if i % 2 == 0 else "resume"
    t0 = time.time()
    response = client.post(f"/api/kernels/{opts['kernel']}/{action}", HTTP_AUTHORIZATION="Bearer " + token)
    t1 = time.time()
    assert response.status_code == 202, response.content
    cid = response.json()["command_id"]
    wait_until(AuditEvent.objects.filter(action="command.applied", command_id=cid).exists, timeout=60,
               poll=0.002, what=f"command {cid} audited as applied",
               last_seen=lambda: "status {0.status}, error {0.error!r}".format(ControlCommand.objects.get(command_id=cid)))
    t_audit = time.time()
    row = ControlCommand.objects.get(command_id=cid)
    event = AuditEvent.objects.get(action="command.applied", command_id=cid)
    if i >= opts["warmup"]:
        samples.append({
            "command_id": cid, "action": action, "status_after_api": response.json()["status"],
            "api": (t1 - t0) * 1000,
            "delivered": (row.delivered_at.timestamp() - t0) * 1000 if row.delivered_at else None,
            "applied": (iso_s(event.payload["at"]) - t0) * 1000,
            "audited": (t_audit - t0) * 1000,
        })
    time.sleep(rng.uniform(0.0, opts["gap"]))
print(json.dumps(samples))
"""


class Procs:
    """Background processes of one mode; all stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env, self.procs = root, env, []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = spawn(args, env=env or self.env, log_path=self.root / f"{name}.log")
        self.procs.append((name, proc))
        return proc

    def wait_log(self, name: str, text: str, timeout: float = 60.0) -> None:
        path, proc = self.root / f"{name}.log", dict(self.procs)[name]

        def said() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited before saying {text!r}:\n{log_tail(path, 40)}")
            return path.exists() and text in path.read_text(errors="replace")

        wait_until(said, timeout=timeout, what=f"{name} to say {text!r}", poll=0.1,
                   last_seen=lambda: log_tail(path, 40))

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            kill_group(proc, signal.SIGTERM, timeout=20)


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def run_mode(mode: str, args: argparse.Namespace, root: Path) -> dict:
    root.mkdir(parents=True)
    state_dir = root / "kernel"
    env = clean_env(drop=("REDIS_URL",), DJANGO_SETTINGS_MODULE="foresight_site.settings",
                    DATABASE_URL=f"sqlite:///{root / 'console.sqlite3'}",
                    FORESIGHT_AUDIT_SPOOL=str(root / "audit-spool.jsonl"), FORESIGHT_LOG_LEVEL="WARNING",
                    FORESIGHT_SYNC_INTERVAL_S=str(args.sync_interval), PYTHONUNBUFFERED="1")
    procs = Procs(root, env)
    kernel = bench_kernel(state_dir, speed=args.speed, tick_ms=args.tick_ms, demo=True)
    try:
        log(f"{mode}: migrating a fresh console database")
        manage(env, "migrate", "--noinput")
        if mode == "redis":
            redis_dir = root / "redis"
            redis_dir.mkdir()
            port = free_port()
            procs.start("redis", [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
                                  "--bind", "127.0.0.1", "--dir", str(redis_dir), "--save", "", "--appendonly", "no"])
            procs.wait_log("redis", "Ready to accept connections")
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            env["FORESIGHT_HOST_QUEUES"] = "host-a"
        log(f"{mode}: starting the kernel (--demo, --tick-ms {args.tick_ms})")
        start_running(kernel)
        manage(env, "addkernel", "--name", "bench", "--state-dir", str(state_dir),
               *(["--queue", "host-a"] if mode == "redis" else []))
        if mode == "redis":
            worker_env = dict(env, FORESIGHT_LOG_LEVEL="INFO")
            procs.start("worker", [sys.executable, "-m", "celery", "-A", "foresight_site", "worker", "-Q",
                                   "host-a,host-a.halt", "-n", "bench@%h", "-c", "2", "--loglevel", "WARNING",
                                   "--without-gossip", "--without-mingle"], worker_env)
            procs.start("beat", [sys.executable, "-m", "celery", "-A", "foresight_site", "beat", "--schedule",
                                 str(root / "beat-schedule"), "--pidfile=", "--loglevel", "INFO"])
            procs.wait_log("beat", "beat: Starting")
            time.sleep(3.0)  # the worker's start-up
        else:
            procs.start("syncstatus", [sys.executable, "manage.py", "syncstatus", "--loop", "--interval",
                                       str(args.sync_interval)])
        log(f"{mode}: {args.commands} commands (+{args.warmup} warm-up), one at a time")
        opts = {"kernel": "bench", "commands": args.commands, "warmup": args.warmup, "gap": args.gap,
                "seed": args.seed}
        done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(opts)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120 + args.commands * 10)
        if done.returncode != 0:
            raise RuntimeError(f"the driver failed:\n{done.stderr[-4000:]}")
        samples = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        procs.stop()
        kernel.stop()
    return {
        "mode": mode,
        "phases_ms": {p: stats([s[p] for s in samples], ndigits=1) for p in PHASES},
        "status_after_api": {k: sum(1 for s in samples if s["status_after_api"] == k)
                             for k in sorted({s["status_after_api"] for s in samples})},
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 commands per mode")
    parser.add_argument("--modes", default="eager,redis", help="comma list: eager, redis")
    parser.add_argument("--commands", type=int, default=None, help="measured commands per mode (default 200)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sync-interval", type=float, default=1.0,
                        help="syncstatus --loop interval / FORESIGHT_SYNC_INTERVAL_S (s)")
    parser.add_argument("--gap", type=float, default=None,
                        help="random pause between commands, up to this (s); default: the sync interval, so "
                             "that commands land at random points of the sync cycle, not right after a sync")
    parser.add_argument("--tick-ms", type=int, default=100)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (logs, databases)")
    parser.add_argument("--name", default=None, help="results file name (default command_roundtrip[_quick])")
    args = parser.parse_args()
    args.commands = args.commands or (30 if args.quick else 200)
    args.gap = args.sync_interval if args.gap is None else args.gap
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - {"eager", "redis"}:
        parser.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    if "redis" in modes and not (shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()):
        parser.error("the redis mode needs redis-server (scripts/system-deps.sh installs it)")

    tmp = make_temp_dir("foresight-roundtrip-")
    started = time.time()
    try:
        results = [run_mode(mode, args, tmp / mode) for mode in modes]
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for r in results:
        for phase in PHASES:
            s = r["phases_ms"][phase]
            rows.append([r["mode"], phase, s["n"], s["p50"], s["p99"], s["max"]])
    table = format_table(["mode", "from the API call to", "n", "p50 ms", "p99 ms", "max ms"], rows)
    summary = {
        "commands_per_mode": args.commands, "sync_interval_s": args.sync_interval, "tick_ms": args.tick_ms,
        **{f"{r['mode']}_{phase}_p50_ms": r["phases_ms"][phase]["p50"] for r in results for phase in PHASES},
        **{f"{r['mode']}_{phase}_p99_ms": r["phases_ms"][phase]["p99"] for r in results for phase in PHASES},
    }
    result = {
        "bench": NAME,
        "args": vars(args),
        "machine": machine_info(),
        "duration_s": round(time.time() - started, 1),
        "summary": summary,
        "modes": results,
    }
    emit(args.name or (NAME + ("_quick" if args.quick else "")), result, [table])


if __name__ == "__main__":
    main()
