"""The console on Celery + Redis, with real processes: ``redis-server`` on a free port,
``celery worker`` per kernel host queue, ``celery beat``, ``runkernel --demo --speed 600``
kernels, and one SQLite file database shared by all of them (tests/integration/celery_cluster.py).

- two kernels, two workers on two queues: a command reaches only its kernel's control.json;
  the outcomes of both, and a remote halt on the "<queue>.halt" path, reach the audit log;
  a kernel that stops reporting is flagged stale by the console's worker;
- no Redis at all (the embedded default): the same tasks run in the calling process and
  ``syncstatus --loop`` records the outcomes;
- a worker killed (kill -9) between writing control.json and recording it: Redis hands the
  unacknowledged task to the restarted worker, and the command is applied and audited once;
- Redis down: the API still halts a local kernel; commands (and a halt) for a remote kernel
  stay pending, shown as not queued, and are delivered once when Redis is back, from the
  database (the new redis-server starts empty: the console, not Redis, remembers what is owed);
- 1,000 commands issued at once from 4 processes across 2 kernels: each applied once, in its
  kernel's issue order, each audited once.

"Hosts" are queues here: every process runs on this machine, and a kernel registered with
host "remote-b" is one whose files the console must not touch (only its worker does). Each
worker is told its host's kernels (FORESIGHT_HOST_KERNELS), as in production: the tasks
carry names and ids only (tests/integration/test_celery_trust.py has the forged messages).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.celery_cluster import WAIT_S as CLUSTER_WAIT_S
from tests.integration.celery_cluster import (  # noqa: F401 (fixtures)
    Cluster,
    cluster,
    console_db_template,
    host_kernels,
    redis_server,
)
from tests.support.ledger_reader import ledger_rows
from tests.support.processes import log_tail, spawn
from tests.support.status_reader import read_control
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT_S = 90.0

SETUP = """
from django.contrib.auth.models import Group, User
from trading import services
for name, queue, host in kernels:
    services.kernel_register(name=name, state_dir=state_dirs[name], queue=queue, host=host)
user = User.objects.create_user("olga")
user.groups.add(Group.objects.get(name="Operator"))
result = services.token_create(user=user, name="integration")[1]
"""

API = """
from django.test import Client
response = Client().post(path, data=json.dumps(body), content_type="application/json",
                         HTTP_AUTHORIZATION="Bearer " + token)
result = {"status": response.status_code, "body": response.json()}
"""

ISSUE = """
from trading import services
from trading.models import Kernel
result = []
for kernel_name, action, slot in commands:
    kernel = Kernel.objects.get(name=kernel_name)
    command = services.command_issue(kernel=kernel, action=action, actor=services.Actor.cli(), slot_id=slot)
    result.append(command.command_id)
"""


def setup_console(cluster: Cluster, kernels: list[tuple[str, Path, str, str]], **env: str):
    """Register the kernels (name, state dir, queue, host); a shell and an Operator's API token."""
    shell = cluster.shell(**env)
    token = shell.run(SETUP, kernels=[(n, q, h) for n, _, q, h in kernels],
                      state_dirs={n: str(d) for n, d, _, _ in kernels})
    return shell, token


def api(shell, token: str, path: str, body: dict | None = None) -> dict:
    return shell.run(API, path=path, body=body or {}, token=token)


def commands(cluster: Cluster, ids: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for row in cluster.rows(
                "SELECT c.*, k.name AS kernel_name FROM trading_controlcommand c "
                "JOIN trading_kernel k ON k.id = c.kernel_id "
                f"WHERE c.command_id IN ({','.join('?' * len(chunk))})", tuple(chunk)):
            out[row["command_id"]] = row
    return out


def audits(cluster: Cluster, action: str, ids: list[str] | None = None) -> list[dict]:
    rows = cluster.rows("SELECT * FROM trading_auditevent WHERE action = ? ORDER BY id", (action,))
    return [r for r in rows if ids is None or r["command_id"] in set(ids)]


def wait_status(cluster: Cluster, ids: list[str], status: str, timeout: float = WAIT_S) -> dict[str, dict]:
    def done():
        rows = commands(cluster, ids)
        return rows if len(rows) == len(ids) and all(r["status"] == status for r in rows.values()) else None

    try:
        return wait_until(done, timeout=timeout, what=f"{len(ids)} command(s) to be {status}", poll=0.2)
    except AssertionError:
        rows = commands(cluster, ids)
        raise AssertionError(f"not all {status}: {Counter(r['status'] for r in rows.values())}; "
                             f"e.g. {next((r for r in rows.values() if r['status'] != status), None)}")


def ledger_commands(state_dir: Path) -> list[dict]:
    return ledger_rows(state_dir, "SELECT * FROM commands ORDER BY seq")


class ControlWatcher:
    """Every command id that ever appears in a state dir's control.json (polled, in the background)."""

    def __init__(self, *state_dirs: Path) -> None:
        self.seen: dict[Path, set[str]] = {d: set() for d in state_dirs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for d, seen in self.seen.items():
                try:
                    seen.update(c["id"] for c in (read_control(d) or {}).get("commands") or [])
                except ValueError:  # never expected (atomic writers), but this thread must keep watching
                    pass
            time.sleep(0.005)

    def stop(self) -> dict[Path, set[str]]:
        self._stop.set()
        self._thread.join(5)
        return self.seen


def wait_slots(cluster: Cluster, *names: str) -> None:
    """The hosts' workers have synced each kernel once (its slots are in the console)."""
    def synced():
        rows = cluster.rows("SELECT k.name, COUNT(s.id) AS n FROM trading_kernel k "
                            "LEFT JOIN trading_slot s ON s.kernel_id = k.id GROUP BY k.name")
        have = {r["name"]: r["n"] for r in rows}
        return all(have.get(n, 0) > 0 for n in names)

    wait_until(synced, timeout=WAIT_S, what=f"the workers to sync {', '.join(names)}", poll=0.2)


# ================================================================== two kernels, two queues


def test_commands_reach_only_their_kernels_host_and_every_outcome_is_audited(cluster, kernels, tmp_path):
    cluster.settings["FORESIGHT_STALE_AFTER_S"] = "4"
    dir_a, dir_b = tmp_path / "kernel-a", tmp_path / "kernel-b"
    ka, kb = kernels(dir_a), kernels(dir_b)
    cluster.worker("worker-a", "host-a,host-a.halt", FORESIGHT_HOST_KERNELS=host_kernels(alpha=dir_a))
    cluster.worker("worker-b", "host-b,host-b.halt", FORESIGHT_HOST_KERNELS=host_kernels(beta=dir_b))
    console = cluster.worker("worker-console", "console", concurrency=1)
    cluster.beat()
    # alpha is on this machine (its halt is written directly); beta is "remote": only worker-b touches it.
    shell, token = setup_console(cluster, [("alpha", dir_a, "host-a", ""), ("beta", dir_b, "host-b", "remote-b")])
    wait_slots(cluster, "alpha", "beta")
    watcher = ControlWatcher(dir_a, dir_b)

    wanted = []
    for i in range(10):
        action = "slot.pause" if i % 2 == 0 else "slot.resume"
        wanted += [("alpha", action, "btc-5m"), ("beta", action, "eth-15m")]
    ids = shell.run(ISSUE, commands=wanted)
    by_kernel = {"alpha": [i for i, w in zip(ids, wanted) if w[0] == "alpha"],
                 "beta": [i for i, w in zip(ids, wanted) if w[0] == "beta"]}
    rows = wait_status(cluster, ids, "applied")

    seen = watcher.stop()
    assert not seen[dir_b] & set(by_kernel["alpha"]), "an alpha command reached beta's control.json"
    assert not seen[dir_a] & set(by_kernel["beta"]), "a beta command reached alpha's control.json"
    for name, d in (("alpha", dir_a), ("beta", dir_b)):
        applied = [c["id"] for c in ledger_commands(d) if c["id"] in set(ids)]
        assert applied == by_kernel[name]  # only its own, once each, in issue order
        assert {rows[i]["kernel_name"] for i in by_kernel[name]} == {name}
    events = audits(cluster, "command.applied", ids)
    assert Counter(e["command_id"] for e in events) == Counter(ids)
    assert {e["command_id"]: e["kernel_name"] for e in events} == {i: rows[i]["kernel_name"] for i in ids}
    assert "trading.deliver_command" in cluster.log_of("worker-a") + cluster.log_of("worker-b")

    # A halt for the remote kernel goes on host-b.halt: pending (in flight) until beta confirms it.
    reply = api(shell, token, "/api/kernels/beta/halt", {"reason": "integration: remote halt"})
    assert reply["status"] == 202 and reply["body"]["status"] == "pending", reply
    halt_id = reply["body"]["command_id"]
    kb.wait(lambda s: s["state"] == "halted", what="beta to halt")
    assert ka.status()["state"] != "halted"
    wait_status(cluster, [halt_id], "applied")
    beta = wait_until(lambda: next((k for k in cluster.rows("SELECT * FROM trading_kernel WHERE name='beta'")
                                    if k["halt_engaged"] and k["halt_requested_at"] is None), None),
                      timeout=CLUSTER_WAIT_S, what="the console to show beta halted")
    assert beta["state"] == "halted"
    assert [e["outcome"] for e in audits(cluster, "halt.engaged", [halt_id])] == ["queued"]
    assert len(audits(cluster, "halt.observed")) == 1
    assert f"HALT {halt_id} written into" in cluster.log_of("worker-b")

    # beta hangs (SIGSTOP): the console's worker flags it (audit event once, ERROR log line once);
    # running again, it is recovered; a clean stop (SIGTERM) is kernel.stopped, not stale.
    os.kill(kb.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: [e for e in audits(cluster, "kernel.stale") if e["kernel_name"] == "beta"],
                   timeout=WAIT_S, what="a kernel.stale audit event for beta")
        time.sleep(3.0)  # more stale checks run: the outage is still audited once, and logged once
        assert [e["kernel_name"] for e in audits(cluster, "kernel.stale")].count("beta") == 1
        assert console.log().count("kernel beta is stale") == 1
        assert "ERROR/ForkPoolWorker" in console.log()
    finally:
        os.kill(kb.pid, signal.SIGCONT)
    wait_until(lambda: [e for e in audits(cluster, "kernel.recovered") if e["kernel_name"] == "beta"],
               timeout=WAIT_S, what="a kernel.recovered audit event for beta")
    kb.terminate()
    wait_until(lambda: [e for e in audits(cluster, "kernel.stopped") if e["kernel_name"] == "beta"],
               timeout=WAIT_S, what="a kernel.stopped audit event for beta")
    assert [e["kernel_name"] for e in audits(cluster, "kernel.stale")].count("beta") == 1


# ================================================================== no Redis: the embedded default


def test_without_redis_the_same_tasks_run_in_process_and_syncstatus_records_the_outcomes(
        cluster, kernels, tmp_path, redis_server):
    redis_server.kill()  # nothing may need a broker
    dir_a = tmp_path / "kernel-a"
    ka = kernels(dir_a)
    # Registered behind a queue, as on a multi-host console: without REDIS_URL its delivery task runs eagerly.
    shell, token = setup_console(cluster, [("alpha", dir_a, "host-a", "")], REDIS_URL="")
    cluster.manage("syncstatus", "syncstatus", "--loop", "--interval", "0.5", REDIS_URL="")

    ids = shell.run(ISSUE, commands=[("alpha", "pause", None), ("alpha", "resume", None)])
    assert {r["status"] for r in commands(cluster, ids).values()} <= {"delivered", "applied"}  # on commit
    wait_status(cluster, ids, "applied")
    assert [c["id"] for c in ledger_commands(dir_a) if c["id"] in ids] == ids
    assert Counter(e["command_id"] for e in audits(cluster, "command.applied", ids)) == Counter(ids)

    reply = api(shell, token, "/api/kernels/alpha/halt?wait=5", {"reason": "integration: embedded"})
    assert reply["status"] == 202 and reply["body"]["status"] == "applied", reply
    assert ka.status()["state"] == "halted"


# ================================================================== kill -9 mid-delivery


def test_a_worker_killed_mid_delivery_is_redelivered_and_the_command_applied_once(cluster, kernels, tmp_path):
    # Redis hands an unacknowledged task to another worker after this long (production: 3600 s).
    cluster.settings["FORESIGHT_CELERY_VISIBILITY_TIMEOUT"] = "4"
    dir_a = tmp_path / "kernel-a"
    ka = kernels(dir_a)
    shell, _ = setup_console(cluster, [("alpha", dir_a, "host-a", "")])
    # No beat: the host's periodic sync (which also re-sends pending commands) is not running,
    # so only Redis redelivering the unacknowledged task can finish this delivery.
    slow = cluster.worker("worker-a1", "host-a,host-a.halt", concurrency=1, FORESIGHT_TEST_DELIVERY_PAUSE_S="60",
                          FORESIGHT_HOST_KERNELS=host_kernels(alpha=dir_a))

    [cid] = shell.run(ISSUE, commands=[("alpha", "pause", None)])
    ka.wait(lambda s: any(c["id"] == cid and c["result"] == "applied" for c in s["commands"]),
            what="the kernel to apply the command")
    wait_until(lambda: "pausing 60.0 s after the write" in slow.log(), timeout=CLUSTER_WAIT_S,
               what="the worker to hold the delivery")
    slow.kill9()  # after the write, before the record; the task is not acknowledged
    row = commands(cluster, [cid])[cid]
    assert (row["status"], row["delivery_attempts"]) == ("pending", 0)

    fresh = cluster.worker("worker-a2", "host-a,host-a.halt", FORESIGHT_HOST_KERNELS=host_kernels(alpha=dir_a))
    wait_status(cluster, [cid], "delivered")
    assert f"Task trading.deliver_command[" in fresh.log() and "1 already handled by the kernel" in fresh.log()
    shell.run("from trading import tasks\ntasks.sync_host_kernels.apply_async(('host-a',), queue='host-a')")
    row = wait_status(cluster, [cid], "applied")[cid]

    assert row["delivery_attempts"] == 1
    assert [c["id"] for c in ledger_commands(dir_a)].count(cid) == 1
    assert [c["id"] for c in ka.status()["commands"]].count(cid) == 1
    assert len(audits(cluster, "command.applied", [cid])) == 1
    assert ka.status()["state"] == "paused"


# ================================================================== Redis down


def test_with_redis_down_a_local_halt_still_works_and_remote_commands_wait_in_the_database(
        cluster, kernels, tmp_path, redis_server):
    dir_l, dir_r = tmp_path / "kernel-local", tmp_path / "kernel-remote"
    kl, kr = kernels(dir_l), kernels(dir_r)
    cluster.worker("worker-b", "host-b,host-b.halt", FORESIGHT_HOST_KERNELS=host_kernels(remote=dir_r))
    cluster.beat()
    shell, token = setup_console(cluster, [("local", dir_l, "", ""), ("remote", dir_r, "host-b", "remote-b")])
    wait_slots(cluster, "local", "remote")
    [warm] = shell.run(ISSUE, commands=[("remote", "slot.pause", "btc-5m")])
    wait_status(cluster, [warm], "applied")

    redis_server.kill()

    reply = api(shell, token, "/api/kernels/local/halt?wait=5", {"reason": "integration: redis is down"})
    assert reply["status"] == 202 and reply["body"]["status"] == "applied", reply
    assert kl.status()["state"] == "halted"

    pause = api(shell, token, "/api/kernels/remote/pause")
    assert pause["status"] == 202 and pause["body"]["status"] == "pending", pause
    assert "broker is unavailable" in pause["body"]["error"]
    halt = api(shell, token, "/api/kernels/remote/halt", {"reason": "integration: remote halt, redis down"})
    assert halt["status"] == 202 and halt["body"]["status"] == "pending", halt
    assert "not queued on host-b.halt" in halt["body"]["error"]
    pause_id, halt_id = pause["body"]["command_id"], halt["body"]["command_id"]
    remote = cluster.rows("SELECT * FROM trading_kernel WHERE name='remote'")[0]
    assert remote["halt_requested_at"] is not None and not remote["halt_engaged"]  # in flight, unconfirmed
    assert [e["outcome"] for e in audits(cluster, "halt.engaged", [halt_id])] == ["not_queued"]

    # Undelivered while the broker is down: nothing reaches the remote kernel.
    time.sleep(2.0)
    rows = commands(cluster, [pause_id, halt_id])
    assert {r["status"] for r in rows.values()} == {"pending"}
    assert pause_id not in (dir_r / "control.json").read_text() and kr.status()["state"] != "halted"

    redis_server.start()  # same port, empty: the database, not Redis, remembers what is owed
    kr.wait(lambda s: s["state"] == "halted", timeout=WAIT_S, what="the remote kernel to halt")
    rows = wait_status(cluster, [pause_id, halt_id], "applied")
    assert rows[pause_id]["delivery_attempts"] == 1
    assert [c["id"] for c in ledger_commands(dir_r)].count(pause_id) == 1
    assert len(audits(cluster, "command.applied", [pause_id])) == 1
    assert Counter(e["kernel_name"] for e in audits(cluster, "halt.observed")) == {"local": 1, "remote": 1}
    wait_until(lambda: cluster.rows("SELECT * FROM trading_kernel WHERE name='remote'")[0]["halt_requested_at"] is None,
               timeout=CLUSTER_WAIT_S, what="the console to clear the remote halt request")


# ================================================================== 1,000 commands, 4 processes


ISSUER = """
import json, os, sys, time
import django
django.setup()
from trading import services
from trading.models import Kernel
plan = json.loads(sys.argv[1])
kernels = {k.name: k for k in Kernel.objects.all()}
while not os.path.exists(plan["go"]):
    time.sleep(0.005)
ids = []
for name, action in plan["commands"]:
    command = services.command_issue(kernel=kernels[name], action=action, actor=services.Actor.cli())
    ids.append(command.command_id)
print(json.dumps(ids))
"""


def test_a_thousand_commands_from_four_processes_are_applied_once_in_issue_order_and_audited(
        cluster, kernels, tmp_path):
    dir_a, dir_b = tmp_path / "kernel-a", tmp_path / "kernel-b"
    kernels(dir_a), kernels(dir_b)
    cluster.worker("worker-a", "host-a,host-a.halt", FORESIGHT_HOST_KERNELS=host_kernels(alpha=dir_a))
    cluster.worker("worker-b", "host-b,host-b.halt", FORESIGHT_HOST_KERNELS=host_kernels(beta=dir_b))
    cluster.beat()
    setup_console(cluster, [("alpha", dir_a, "host-a", ""), ("beta", dir_b, "host-b", "")])

    go = tmp_path / "go"
    issuers = []
    for p in range(4):
        plan = [("alpha" if (p + i) % 2 else "beta", "pause" if (i // 2) % 2 else "resume") for i in range(250)]
        issuers.append(spawn([sys.executable, "-c", ISSUER, json.dumps({"go": str(go), "commands": plan})],
                             env=cluster.env(), log_path=tmp_path / f"issuer-{p}.log", pipes=True))
    time.sleep(3.0)  # let them all finish starting Django, then release them together
    go.touch()
    ids = []
    for p, proc in enumerate(issuers):
        out, _ = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, log_tail(tmp_path / f"issuer-{p}.log", 40)
        ids += json.loads(out)
    assert len(set(ids)) == 1000

    rows = wait_status(cluster, ids, "applied", timeout=180)

    for name, d in (("alpha", dir_a), ("beta", dir_b)):
        issued = [r["command_id"] for r in sorted(rows.values(), key=lambda r: r["id"]) if r["kernel_name"] == name]
        applied = [c for c in ledger_commands(d) if c["id"] in rows]
        assert len(issued) == 500
        assert [c["id"] for c in applied] == issued  # each once, only its own, in issue order
        assert {c["result"] for c in applied} == {"applied"}
    assert Counter(e["command_id"] for e in audits(cluster, "command.applied", ids)) == Counter(ids)
    assert Counter(e["command_id"] for e in audits(cluster, "command.issued", ids)) == Counter(ids)
