"""Issue 15, item 3: one command id followed end to end with one grep.

A real console (gunicorn with the documented foresight_site/gunicorn.conf.py, a SQLite file
database) and a real ``runkernel``, both writing JSON logs to files. A pause issued through
the API; then its id is looked for, as text, in the console's log, the kernel's log,
control.json, status.json and the audit table: every line that names it is a JSON object
whose ``command_id`` field is that id, and every place holds it. A halt issued through the API
likewise: its ``halt-…`` id is in the console's log, control.json's halt block, the kernel's
"HALT engaged" and cancel-sweep lines, status.json's halt block and the audit rows; the release's
kernel line names it as ``halt_id``.

A Celery worker's JSON lines name the command it delivers too (Redis, a real worker, a kernel
behind a queue), in the second test.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.celery_cluster import (  # noqa: F401 (fixtures)
    Cluster,
    cluster,
    console_db_template,
    host_kernels,
    redis_server,
)
from tests.support.console_process import ConsoleProcess, console_env
from tests.support.kernel_process import WAIT_S, KernelProcess, kernel_env, runkernel_args
from tests.support.ledger_reader import sqlite_rows
from tests.support.status_reader import command_result, read_control, read_status
from tests.support.strategy_folders import copy_repo_strategies
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETUP = """\
import json
from django.contrib.auth.models import Group, User
from trading import services
user = User.objects.create_user("olga")
user.groups.add(Group.objects.get(name="Operator"))
print(json.dumps(services.token_create(user=user, name="trace")[1]))
"""

RISK_SETUP = SETUP.replace('"olga"', '"rita"').replace('name="Operator"', 'name="Risk"')


def lines_naming(text: str, command_id: str) -> list[dict]:
    """Every line of a log that contains the id, each parsed as JSON (a line that is not JSON fails)."""
    found = []
    for line in text.splitlines():
        if command_id in line:
            try:
                found.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"a line naming {command_id} is not JSON: {line!r}") from None
    return found


class Trace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "console.sqlite3"
        self.state_dir = root / "state"
        self.state_dir.mkdir()
        self.strategies = root / "strategies"
        copy_repo_strategies(self.strategies)
        self.console = ConsoleProcess(root, console_env(
            database_url=f"sqlite:///{self.db}", drop=("REDIS_URL",), FORESIGHT_LOG_FORMAT="json",
            FORESIGHT_AUDIT_SPOOL=str(root / "audit-spool.jsonl"), FORESIGHT_STRATEGIES_DIR=str(self.strategies),
            FORESIGHT_API_MAX_WAIT_S="30"), timeout=WAIT_S)
        self.kernel = KernelProcess(
            self.state_dir, runkernel_args(demo=True, speed=600, strategies_dir=self.strategies,
                                           extra=["--log-format", "json"]),
            env=kernel_env(), log_path=root / "kernel.log")

    def start(self) -> str:
        self.console.manage("migrate", "--noinput", "-v0")
        token = json.loads(self.console.manage("shell", "-c", SETUP).stdout.strip().splitlines()[-1])
        self.kernel.start()
        self.console.manage("addkernel", "--name", "demo", "--state-dir", str(self.state_dir))
        self.console.start_gunicorn()
        return token

    def stop(self) -> None:
        self.console.stop()
        self.kernel.cleanup()


@pytest.fixture
def trace(tmp_path) -> Iterator[Trace]:
    t = Trace(tmp_path)
    try:
        yield t
    finally:
        t.stop()


def test_one_grep_of_a_pause_id_finds_it_in_every_log_file_and_record(trace):
    token = trace.start()
    code, body = trace.console.api("POST", "/api/kernels/demo/pause?wait=30", token=token)
    assert (code, body["status"]) == (202, "applied"), body
    command_id = body["command_id"]

    # The console: issued and delivered, each a JSON line with the id as its command_id field.
    console_lines = wait_until(
        lambda: (lambda found: found if len(found) >= 2 else None)(
            lines_naming(trace.console.server_log.read_text(), command_id)),
        timeout=WAIT_S, what="the console's lines about the pause")
    assert {line["command_id"] for line in console_lines} == {command_id}
    assert {line["logger"] for line in console_lines} == {"trading.services"}
    messages = " | ".join(line["msg"] for line in console_lines)
    assert f"command {command_id} issued: pause for kernel demo by olga" in messages
    assert f"delivered 1 command(s) up to {command_id}" in messages
    # And the result, once the console has mirrored the kernel's answer (status_mirror).
    result_lines = wait_until(
        lambda: [line for line in lines_naming(trace.console.server_log.read_text(), command_id)
                 if line["msg"] == f"command {command_id} pause for kernel demo: applied"] or None,
        timeout=WAIT_S, what="the console's line about the pause's result")
    assert [line["command_id"] for line in result_lines] == [command_id]
    # Every line the web server wrote is JSON, gunicorn's own too (gunicorn.conf.py's logger class).
    server_log = [json.loads(line) for line in trace.console.server_log.read_text().splitlines() if line.strip()]
    assert server_log[0]["msg"].startswith("Starting gunicorn") and server_log[0]["logger"] == "gunicorn.error"

    # The kernel: the applied line, JSON, its command_id the id.
    kernel_lines = wait_until(lambda: lines_naming(trace.kernel.log_path.read_text(), command_id),
                              timeout=WAIT_S, what="the kernel's line about the pause")
    assert [(line["logger"], line["command_id"], line["msg"]) for line in kernel_lines] == [
        ("kernel", command_id, f"command {command_id} pause: applied")]

    # Every line of the kernel's log is JSON, its start-up line too.
    kernel_log = [json.loads(line) for line in trace.kernel.log_path.read_text().splitlines() if line.strip()]
    assert kernel_log[0]["msg"].startswith(f"kernel pid {trace.kernel.pid} on ")

    # control.json and status.json hold it.
    assert command_id in [c["id"] for c in read_control(trace.state_dir)["commands"]]
    assert command_id in (trace.state_dir / "control.json").read_text()
    assert command_result(read_status(trace.state_dir), command_id)["result"] == "applied"
    assert command_id in (trace.state_dir / "status.json").read_text()

    # The audit table: issued and applied, each row naming the id in its own column.
    rows = wait_until(lambda: (lambda r: r if {"command.issued", "command.applied"} <= {x["action"] for x in r}
                               else None)(sqlite_rows(trace.db, "SELECT action, command_id FROM trading_auditevent "
                                                                "WHERE command_id = ?", (command_id,))),
                      timeout=WAIT_S, what="the pause's audit events")
    assert {r["command_id"] for r in rows} == {command_id}


def test_a_celery_worker_logs_the_command_it_delivers_as_json(cluster: Cluster, tmp_path):
    state_dir = tmp_path / "kernel-a"
    strategies = tmp_path / "strategies"
    copy_repo_strategies(strategies)
    kernel = KernelProcess(state_dir, runkernel_args(demo=True, speed=600, strategies_dir=strategies,
                                                     extra=["--log-format", "json"]),
                           env=kernel_env(), log_path=tmp_path / "kernel.log").start()
    try:
        worker = cluster.worker("worker-a", "host-a,host-a.halt", FORESIGHT_LOG_FORMAT="json",
                                FORESIGHT_HOST_KERNELS=host_kernels(alpha=state_dir))
        shell = cluster.shell(FORESIGHT_LOG_FORMAT="json")
        command_id = shell.run("""
            from trading import services
            kernel = services.kernel_register(name="alpha", state_dir=state_dir, queue="host-a", host="")
            result = services.command_issue(kernel=kernel, action="pause", actor=services.Actor.cli()).command_id
        """, state_dir=str(state_dir))
        kernel.wait(lambda st: command_result(st, command_id), timeout=WAIT_S, what="the pause applied")

        def worker_lines() -> list[dict] | None:
            found = [line for line in lines_naming(worker.log(), command_id)
                     if line.get("logger") == "trading.services"]
            return found or None

        issued = lines_naming((tmp_path / "shell-0.log").read_text(), command_id)  # the console's own process
        assert [line["command_id"] for line in issued] == [command_id] and "issued: pause" in issued[0]["msg"]
        delivered = wait_until(worker_lines, timeout=WAIT_S, what="the worker's line about the pause")
        assert {line["command_id"] for line in delivered} == {command_id}
        assert any(f"delivered 1 command(s) up to {command_id}" in line["msg"] for line in delivered)
        assert lines_naming(kernel.log_path.read_text(), command_id)[0]["command_id"] == command_id
    finally:
        kernel.cleanup()


def test_one_grep_of_a_halt_id_issued_through_the_api_finds_the_halt_everywhere(trace):
    token = trace.start()
    code, body = trace.console.api("POST", "/api/kernels/demo/halt?wait=30", {"reason": "trace the halt"},
                                   token=token)
    assert (code, body["status"]) == (202, "applied"), body
    halt_id = body["command_id"]
    assert halt_id.startswith("halt-")

    # control.json: the halt block carries the id the console made.
    assert read_control(trace.state_dir)["halt"]["id"] == halt_id

    # The kernel: "HALT engaged" on the tick thread and the cancel sweep's line on its own thread,
    # each with the halt's id as its command_id.
    def kernel_halt_lines() -> list[dict] | None:
        found = lines_naming(trace.kernel.log_path.read_text(), halt_id)
        return found if any(line["msg"].startswith("HALT: cancelled") for line in found) else None

    kernel_lines = wait_until(kernel_halt_lines, timeout=WAIT_S, what="the kernel's lines about the halt")
    assert {line["command_id"] for line in kernel_lines} == {halt_id}
    engaged = [line for line in kernel_lines if line["msg"].startswith("HALT engaged")]
    assert len(engaged) == 1 and engaged[0]["level"] == "CRITICAL"
    assert "trace the halt" in engaged[0]["msg"]
    sweep = [line for line in kernel_lines if line["msg"].startswith("HALT: cancelled")]
    assert [line["thread"] for line in sweep] == ["halt-cancel"]

    # status.json's halt block names it.
    halt_block = read_status(trace.state_dir)["halt"]
    assert (halt_block["engaged"], halt_block["command_id"]) == (True, halt_id)

    # The console: written, then observed once the kernel reported it; each line names the halt.
    def console_halt_lines() -> list[dict] | None:
        found = lines_naming(trace.console.server_log.read_text(), halt_id)
        return found if any(line["msg"].startswith("HALT observed") for line in found) else None

    console_lines = wait_until(console_halt_lines, timeout=WAIT_S, what="the console's lines about the halt")
    assert {line["command_id"] for line in console_lines} == {halt_id}
    assert any(line["msg"].startswith("HALT written into") for line in console_lines)

    # The audit table: engaged (the console) and observed (the kernel's report), both with the id.
    rows = wait_until(lambda: (lambda r: r if {"halt.engaged", "halt.observed"} <= {x["action"] for x in r}
                               else None)(sqlite_rows(trace.db, "SELECT action, command_id FROM trading_auditevent "
                                                                "WHERE command_id = ?", (halt_id,))),
                      timeout=WAIT_S, what="the halt's audit events")
    assert {r["command_id"] for r in rows} == {halt_id}

    # The release (a Risk role's): its own id on its line, the halt's as halt_id, so the halt's grep
    # finds it too.
    risk_token = json.loads(trace.console.manage("shell", "-c", RISK_SETUP).stdout.strip().splitlines()[-1])
    code, body = trace.console.api("POST", "/api/kernels/demo/release?wait=30", {}, token=risk_token)
    assert (code, body["status"]) == (202, "applied"), body
    release_id = body["command_id"]
    released = wait_until(
        lambda: [line for line in lines_naming(trace.kernel.log_path.read_text(), halt_id)
                 if line["msg"].startswith("HALT released")] or None,
        timeout=WAIT_S, what="the kernel's release line")
    assert [(line["command_id"], line["halt_id"]) for line in released] == [(release_id, halt_id)]
    assert "command_id" not in read_status(trace.state_dir)["halt"]
