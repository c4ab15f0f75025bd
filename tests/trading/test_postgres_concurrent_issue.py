"""Concurrent command issue on PostgreSQL: four processes, one kernel.

SQLite lets one writer in at a time, so issue order there is commit order by construction.
PostgreSQL runs the four transactions at once: ``command_issue`` makes the issuers of one kernel
take turns (``SELECT ... FOR UPDATE`` on the kernel's row; a no-op on SQLite), so that the
kernel's command ids grow in commit order and each delivery, which writes every older pending
command of the kernel in id order, leaves control.json in issue order. Only a real
PostgreSQL shows it: the test runs in the PostgreSQL run of ``make test`` (tests/support/postgres.py),
on a database of its own that four ``django.setup()`` processes share, as web workers do.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.support.checkout import REPO
from tests.support.postgres import postgres_url_in_use, scratch_database
from tests.support.processes import clean_env, log_tail, spawn
from tests.support.status_reader import read_control
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.integration]

PROCESSES = 4
PER_PROCESS = 100
WAIT_S = 120.0

ISSUER = """
import json, os, sys, time
import django
django.setup()
from trading import services
from trading.models import Kernel
plan = json.loads(sys.argv[1])
kernel = Kernel.objects.get(name="alpha")
actor = services.Actor(name=plan["actor"], source="cli")
print("ready", flush=True)
while not os.path.exists(plan["go"]):
    time.sleep(0.005)
ids = [services.command_issue(kernel=kernel, action=action, actor=actor).command_id for action in plan["actions"]]
print(json.dumps(ids), flush=True)
"""

REPORT = """
import json
import django
django.setup()
from trading.models import AuditEvent, ControlCommand
rows = list(ControlCommand.objects.filter(kernel__name="alpha").order_by("pk").values("command_id", "actor", "status"))
issued = list(AuditEvent.objects.filter(action="command.issued").values_list("command_id", flat=True))
print(json.dumps({"rows": rows, "issued": issued}))
"""


def test_four_processes_issuing_to_one_kernel_keep_its_order_and_unique_ids(tmp_path: Path):
    server = postgres_url_in_use()
    assert server, "the postgres marker runs this test only with DATABASE_URL on PostgreSQL"
    state_dir = tmp_path / "alpha"
    state_dir.mkdir()  # no kernel runs: every command stays in control.json for the test to read
    with scratch_database(server) as database_url:
        env = clean_env(drop=("REDIS_URL",), DJANGO_SETTINGS_MODULE="foresight_site.settings",
                        DATABASE_URL=database_url, FORESIGHT_AUDIT_SPOOL=str(tmp_path / "audit-spool.jsonl"),
                        PYTHONUNBUFFERED="1")

        def manage(*args: str) -> None:
            done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True,
                                  text=True, timeout=WAIT_S)
            assert done.returncode == 0, f"manage.py {args[0]}:\n{done.stdout}\n{done.stderr}"

        manage("migrate", "--noinput", "-v0")
        manage("addkernel", "--name", "alpha", "--state-dir", str(state_dir))

        go = tmp_path / "go"
        issuers = []
        for p in range(PROCESSES):
            actions = ["pause" if i % 2 else "resume" for i in range(PER_PROCESS)]
            plan = {"go": str(go), "actor": f"issuer-{p}", "actions": actions}
            issuers.append(spawn([sys.executable, "-c", ISSUER, json.dumps(plan)], env=env,
                                 log_path=tmp_path / f"issuer-{p}.log", pipes=True))
        for p, proc in enumerate(issuers):  # all four connected and waiting: then released together
            assert proc.stdout.readline().strip() == "ready", log_tail(tmp_path / f"issuer-{p}.log")
        go.touch()
        by_process: list[list[str]] = []
        for p, proc in enumerate(issuers):
            out, _ = proc.communicate(timeout=WAIT_S)
            assert proc.returncode == 0, log_tail(tmp_path / f"issuer-{p}.log", 40)
            by_process.append(json.loads(out))

        report = subprocess.run([sys.executable, "-c", REPORT], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=WAIT_S)
        assert report.returncode == 0, report.stderr
        db = json.loads(report.stdout.strip().splitlines()[-1])

    ids = [cid for ids in by_process for cid in ids]
    assert len(ids) == len(set(ids)) == PROCESSES * PER_PROCESS  # unique ids
    rows = db["rows"]
    in_commit_order = [r["command_id"] for r in rows]
    assert sorted(in_commit_order) == sorted(ids)
    # The four really ran at once: their commands interleave in commit order.
    switches = sum(1 for a, b in zip(rows, rows[1:]) if a["actor"] != b["actor"])
    assert switches >= PROCESSES, f"the issuers ran one after another ({switches} switches): nothing was concurrent"
    # Per kernel, ids grow in commit order, and each process's own commands keep its order.
    assert in_commit_order == sorted(in_commit_order)
    for own in by_process:
        mine = set(own)
        assert [cid for cid in in_commit_order if cid in mine] == own
    # Every command delivered once, and control.json holds the kernel's commands in issue order.
    assert {r["status"] for r in rows} == {"delivered"}, Counter(r["status"] for r in rows)
    control = wait_until(lambda: read_control(state_dir), timeout=5, what="control.json")
    assert [c["id"] for c in control["commands"]] == in_commit_order
    assert Counter(db["issued"]) == Counter(ids)  # one command.issued audit event each
