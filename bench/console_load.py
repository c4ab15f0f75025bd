"""Console under load: requests/s and latency of the kernel status endpoint and of the admin
kernel dashboard, served by gunicorn (a production server, not runserver).

Setup, all in a temp dir:

1. a file SQLite console database (``DATABASE_URL=sqlite:////tmp/.../console.sqlite3``),
   ``FORESIGHT_ENV=production`` (DEBUG off) with a random secret key; ``manage.py migrate``;
2. a superuser, an API token (``trading.services.token_create``) and a logged-in session
   (``django.test.Client.login``: a real session row, its cookie used as is), made through
   ``manage.py shell``;
3. a running demo kernel (``manage.py runkernel --demo --speed 60``: 16 slots) on a temp state
   dir, registered with ``manage.py addkernel --name demo``;
4. gunicorn as documented (``-c foresight_site/gunicorn.conf.py``: gthread workers, no keep-alive,
   so every request opens a connection as it does behind nginx), ``--workers`` workers (default 3,
   the file's) and ``--threads`` threads; ``--worker-class sync`` measures the old model.
   ``FORESIGHT_API_RATE`` is raised to 10,000,000/m: the per-token quota (600/m by default) is a
   policy, and would answer 429 to the load itself.

Then, per endpoint and per concurrency (``--connections``, 8 and 32 by default), ``wrk``
(Debian's package) for ``--duration`` seconds with a 10 s request timeout:

- ``GET /api/kernels/demo`` with ``Authorization: Bearer <token>``;
- the same with ``If-None-Match: <its ETag>`` (a dashboard polling what it has: 304s, no body);
- ``GET /admin/trading/kernel/<pk>/dashboard/`` with the session cookie.

Each endpoint is first fetched once and must answer 200 with the kernel's name in the body
(wrk counts a 302 to the login page as a success). Reported: requests/s, latency p50/p90/p99
(wrk's ``--latency``), non-2xx/3xx responses, socket errors (connect/read/write/timeout).
Without wrk (``--client python``, or when wrk is not installed) a Python load generator
(one process per connection, keep-alive ``http.client``) does the same.

The load generator runs on the same 2-core machine as gunicorn and the kernel: the numbers
are those of the whole box, not of gunicorn alone.

    .venv/bin/python -m bench.console_load            # 15 s per endpoint and concurrency
    .venv/bin/python -m bench.console_load --quick    # 5 s each, 8 and 32 connections
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.harness import (
    bench_kernel,
    emit,
    format_table,
    log,
    machine_info,
    make_temp_dir,
    percentile,
    start_running,
)
from tests.support.console_process import ConsoleProcess
from tests.support.ledger_reader import ledger_rows
from tests.support.waiting import wait_until

NAME = "console_load"
ETAG_SCRIPT = Path(__file__).with_name("etag_poll.lua")

SETUP = r"""
import json
from django.contrib.auth import get_user_model
from django.test import Client
from trading import services
from trading.models import Kernel
User = get_user_model()
u = User.objects.create_superuser("bench", "bench@localhost", "bench-password-123")
_, raw = services.token_create(user=u, name="bench")
c = Client()
assert c.login(username="bench", password="bench-password-123")
k = Kernel.objects.get(name="demo")
print("BENCH_JSON " + json.dumps({"token": raw, "sessionid": c.cookies["sessionid"].value, "kernel_pk": k.pk}))
"""


def parse_wrk(out: str) -> dict:
    def dur(v: str, unit: str) -> float:
        return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    res: dict = {"raw": out}
    for q in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        res[f"p{q}_ms"] = round(dur(*m.groups()), 3) if m else None
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    res["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx_3xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Latency\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    if m:
        res["max_ms"] = round(dur(m.group(5), m.group(6)), 3)
    res["errors"] = res["non_2xx_3xx"] + res["socket_errors"]
    return res


def _py_worker(args) -> tuple[list[float], int, int]:
    port, path, headers, duration = args
    lat, ok, err = [], 0, 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                ok += 1
            else:
                err += 1
        except (OSError, http.client.HTTPException):
            err += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        lat.append((time.perf_counter() - t0) * 1000)
    return lat, ok, err


def run_python(port: int, path: str, headers: dict, conns: int, duration: float) -> dict:
    with mp.Pool(conns) as pool:
        parts = pool.map(_py_worker, [(port, path, headers, duration)] * conns)
    lat = [x for p in parts for x in p[0]]
    errors = sum(p[2] for p in parts)
    return {"rps": round(len(lat) / duration, 1), "requests": len(lat), "p50_ms": round(percentile(lat, 0.5), 3),
            "p90_ms": round(percentile(lat, 0.9), 3), "p99_ms": round(percentile(lat, 0.99), 3),
            "max_ms": round(max(lat), 3), "errors": errors, "non_2xx_3xx": errors, "socket_errors": 0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=None, help="seconds per run (default 15; 5 with --quick)")
    p.add_argument("--connections", default="8,32")
    p.add_argument("--workers", type=int, default=3, help="gunicorn workers (gunicorn.conf.py's default)")
    p.add_argument("--threads", type=int, default=8, help="threads per gthread worker (gunicorn.conf.py's)")
    p.add_argument("--worker-class", default="gthread", choices=("gthread", "sync"))
    p.add_argument("--endpoints", default="status_api,status_api_304,admin_dashboard")
    p.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--name", default=None)
    a = p.parse_args(argv)
    duration = a.duration or (5.0 if a.quick else 15.0)
    conns = [int(x) for x in a.connections.split(",") if x.strip()]
    client = a.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    if client == "wrk" and not shutil.which("wrk"):
        p.error("wrk is not installed (apt-get install wrk, or BENCH=1 scripts/system-deps.sh)")
    name = a.name or (f"{NAME}_quick" if a.quick else NAME)
    machine = machine_info()

    tmp = make_temp_dir("fs-bench-console-")
    state = tmp / "state"
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp / 'console.sqlite3'}", FORESIGHT_ENV="production",
               FORESIGHT_SSL_REDIRECT="false",  # plain HTTP on loopback: no TLS in front
               FORESIGHT_SECRET_KEY=secrets.token_urlsafe(40), FORESIGHT_STATE_DIR=str(state),
               FORESIGHT_AUDIT_SPOOL=str(tmp / "audit-spool.jsonl"), FORESIGHT_LOG_LEVEL="WARNING",
               FORESIGHT_API_RATE="10000000/m",
               DJANGO_SETTINGS_MODULE="foresight_site.settings")
    env.pop("REDIS_URL", None)

    console = ConsoleProcess(tmp, env, timeout=300)

    kernel = None
    results = []
    try:
        log(f"console load: migrate a file SQLite DB in {tmp}")
        console.manage("migrate", "--noinput")
        state.mkdir()
        kernel = bench_kernel(state, speed=60, tick_ms=100, demo=True)
        start_running(kernel)
        console.manage("addkernel", "--name", "demo", "--state-dir", str(state))
        out = console.manage("shell", "-c", SETUP).stdout
        creds = json.loads(out.split("BENCH_JSON ", 1)[1].splitlines()[0])
        if a.worker_class == "gthread":  # the documented server: gunicorn.conf.py, its worker model
            console.start_gunicorn("--workers", str(a.workers), "--threads", str(a.threads),
                                   "--access-logfile", "/dev/null", "--log-level", "warning", timeout=60)
        else:
            console.start_gunicorn("--workers", str(a.workers), "--worker-class", "sync", "--timeout", "60",
                                   "--access-logfile", "/dev/null", "--log-level", "warning", conf=None, timeout=60)
        port = console.port
        endpoints = {
            "status_api": (f"/api/kernels/demo", {"Authorization": f"Bearer {creds['token']}"}, '"demo"'),
            "admin_dashboard": (f"/admin/trading/kernel/{creds['kernel_pk']}/dashboard/",
                                {"Cookie": f"sessionid={creds['sessionid']}"}, "demo"),
        }
        wanted = [e.strip() for e in a.endpoints.split(",") if e.strip()]
        def serving() -> bool:  # gunicorn up and every endpoint answering 200 with the kernel in it
            for ep, (path, headers, needle) in endpoints.items():
                req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
                with urllib.request.urlopen(req, timeout=10) as r:
                    body = r.read().decode("utf-8", "replace")
                    if r.status != 200 or needle not in body or r.geturl().rstrip("/").endswith("login"):
                        raise RuntimeError(f"{ep}: {r.status} {r.geturl()}")
            return True

        wait_until(serving, timeout=60, poll=0.5, what=f"gunicorn serving (log: {tmp / 'gunicorn.log'})",
                   transient=(OSError, RuntimeError), abort=lambda: console.check_alive("the endpoints"))
        log(f"gunicorn on :{port} ({a.workers} {a.worker_class} workers), kernel pid {kernel.pid}, client {client}")
        endpoints["status_api_304"] = endpoints["status_api"]  # with ETAG_SCRIPT: If-None-Match
        if client != "wrk":
            wanted = [e for e in wanted if e != "status_api_304"]  # needs wrk's script
        for ep, (path, headers, _) in [(e, endpoints[e]) for e in wanted]:
            for c in conns:
                if client == "wrk":
                    cmd = ["wrk", "-t", str(min(2, c)), "-c", str(c), "-d", f"{duration:g}s", "--timeout", "10s",
                           "--latency"]
                    if ep == "status_api_304":
                        cmd += ["-s", str(ETAG_SCRIPT)]
                    for k, v in headers.items():
                        cmd += ["-H", f"{k}: {v}"]
                    cmd.append(f"http://127.0.0.1:{port}{path}")
                    r = parse_wrk(subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout)
                    m = re.search(r"^ETAG_POLL (\{.*\})$", r["raw"], re.M)
                    if m:
                        r.update(json.loads(m.group(1)))
                else:
                    r = run_python(port, path, headers, c, duration)
                load = os.getloadavg()[0]
                r.update(endpoint=ep, connections=c, duration_s=duration, loadavg_1m_after=round(load, 2))
                log(f"  {ep:16} c={c:<3} {r['rps']} req/s, p50 {r['p50_ms']} p99 {r['p99_ms']} ms, "
                    f"errors {r['errors']}")
                results.append(r)
                time.sleep(1)
        kernel.check_alive()
        traded = {t: ledger_rows(state, f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] for t in ("orders", "fills")}
    finally:
        console.stop(signal.SIGTERM, timeout=20)
        if kernel is not None:
            kernel.stop()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = [[r["endpoint"], r["connections"], r["requests"], r["rps"], r["p50_ms"], r.get("p90_ms"), r["p99_ms"],
             r.get("max_ms"), r["errors"]] for r in results]
    table = format_table(["endpoint", "conns", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
                          "errors"], rows)
    status_runs = [r for r in results if r["endpoint"] in ("status_api", "status_api_304")]
    summary = {
        "client": client, "gunicorn_workers": a.workers, "worker_class": a.worker_class,
        "threads": a.threads if a.worker_class == "gthread" else 1, "duration_s": duration,
        "loadavg_1m_start": machine["loadavg_at_start"][0], "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "kernel_ledger_orders": traded["orders"], "kernel_ledger_fills": traded["fills"],
        "runs": [{k: v for k, v in r.items() if k != "raw"} for r in results],
        "target": "status endpoint 1,000 req/s with p99 < 20 ms at 32 connections, zero errors",
        "target_met": {f'{r["endpoint"]}@{r["connections"]}': bool(
            r["connections"] >= 32 and r["rps"] and r["rps"] >= 1000 and r["p99_ms"] is not None
            and r["p99_ms"] < 20 and r["errors"] == 0) for r in status_runs},
    }
    emit(name, {"summary": summary, "machine": machine, "wrk_output": [r.get("raw") for r in results]},
         [f"console under load (gunicorn, {a.workers} {a.worker_class} workers; client {client}; a demo kernel "
          f"running: {traded['orders']} orders, {traded['fills']} fills in its ledger)\n\n" + table])
    return 0


if __name__ == "__main__":
    sys.exit(main())
