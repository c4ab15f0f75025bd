"""A halt cannot be starved by requests that wait.

The console runs under gunicorn with the DOCUMENTED worker settings: foresight_site/gunicorn.conf.py,
the file the Procfile and docs/deployment.md's systemd unit use (only the port differs). A kernel
is registered whose state dir exists but no kernel runs, so every ``?wait=`` runs to its end.
``workers × threads − 1`` clients each send ``?wait=<cap>`` (``FORESIGHT_API_MAX_WAIT_S``, its
default), which holds every thread but one; then another operator halts. The halt must be
answered, with control.json holding it, before any waiting request has returned: the order of
the events is compared, never durations.

The console's database is a SQLite file, or a fresh PostgreSQL database when the suite runs on
PostgreSQL (tests/support/postgres.py).
"""
from __future__ import annotations

import json
import os
import runpy
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support.checkout import REPO
from tests.support.console_process import GUNICORN_CONF, ConsoleProcess, console_env
from tests.support.postgres import postgres_url_in_use, scratch_database
from tests.support.status_reader import read_control
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEFAULT_MAX_WAIT_S = 5.0  # FORESIGHT_API_MAX_WAIT_S's default (foresight_site/settings.py)
START_S = 90.0

SETUP = """\
import json
from django.contrib.auth.models import Group, User
from trading import services
tokens = []
for i in range(OPERATORS):
    user = User.objects.create_user(f"op{i}")
    user.groups.add(Group.objects.get(name="Operator"))
    tokens.append(services.token_create(user=user, name="starve")[1])
print(json.dumps(tokens))
"""


def documented_web_server() -> dict[str, Any]:
    """gunicorn.conf.py's settings as gunicorn reads them (no WEB_CONCURRENCY override)."""
    saved = os.environ.pop("WEB_CONCURRENCY", None)
    try:
        return runpy.run_path(str(GUNICORN_CONF))
    finally:
        if saved is not None:
            os.environ["WEB_CONCURRENCY"] = saved


class Console(ConsoleProcess):
    """The console under the documented gunicorn, with an idle kernel registered."""

    def __init__(self, root: Path, database_url: str) -> None:
        super().__init__(root, console_env(database_url=database_url, drop=("REDIS_URL",),
                                           FORESIGHT_AUDIT_SPOOL=str(root / "audit-spool.jsonl")), timeout=START_S)
        self.state_dir = root / "state"
        self.state_dir.mkdir()

    def start(self, operators: int) -> list[str]:
        self.manage("migrate", "--noinput", "-v0")
        tokens = json.loads(self.manage("shell", "-c", SETUP.replace("OPERATORS", str(operators)))
                            .stdout.strip().splitlines()[-1])
        self.manage("addkernel", "--name", "idle", "--state-dir", str(self.state_dir))
        self.start_gunicorn()  # the documented command (Procfile, docs/deployment.md), on a free port
        return tokens


@pytest.fixture
def console(tmp_path) -> Iterator[Console]:
    with ExitStack() as stack:
        server_url = postgres_url_in_use()
        database_url = (stack.enter_context(scratch_database(server_url)) if server_url
                        else f"sqlite:///{tmp_path / 'console.sqlite3'}")
        c = Console(tmp_path, database_url)
        stack.callback(c.stop)
        yield c


def test_a_halt_is_answered_while_every_other_thread_waits(console):
    conf = documented_web_server()
    assert conf["worker_class"] == "gthread" and conf["worker_connections"] == conf["threads"]
    waiters = conf["workers"] * conf["threads"] - 1
    tokens = console.start(operators=waiters + 1)
    halter = tokens.pop()

    # The cap is in the schema and enforced: a longer wait is refused, not served.
    code, schema = console.api("GET", "/api/openapi.json")
    [wait_param] = [p for p in schema["paths"]["/api/kernels/{name}/pause"]["post"]["parameters"]
                    if p["name"] == "wait"]
    assert wait_param["schema"]["maximum"] == DEFAULT_MAX_WAIT_S
    code, body = console.api("POST", f"/api/kernels/idle/pause?wait={DEFAULT_MAX_WAIT_S + 1:g}", token=halter)
    assert code == 422, body

    lock = threading.Lock()
    events: list[str] = []  # in the order they happened
    answers: dict[str, tuple[int, Any]] = {}

    def waiter(i: int) -> None:
        answer = console.api("POST", f"/api/kernels/idle/pause?wait={DEFAULT_MAX_WAIT_S:g}", token=tokens[i])
        with lock:
            events.append(f"waiter-{i} returned")
            answers[f"waiter-{i}"] = answer

    threads = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in range(waiters)]
    for t in threads:
        t.start()

    # Every waiter's command is in control.json: each request is past its issue and in its wait.
    def issued() -> int:
        return len((read_control(console.state_dir) or {}).get("commands") or [])

    wait_until(lambda: issued() == waiters, timeout=START_S, what=f"{waiters} waiting requests to issue their pause",
               last_seen=lambda: f"{issued()} commands in control.json, events {events}")
    with lock:
        returned_before_halt = list(events)
        events.append("halt sent")
    assert not returned_before_halt, (f"waits ended before all {waiters} were served at once (some queued "
                                      f"behind busy threads?): {returned_before_halt}")

    code, body = console.api("POST", "/api/kernels/idle/halt", {"reason": "starvation drill"}, token=halter)
    halt_in_control = (read_control(console.state_dir) or {}).get("halt")
    with lock:
        events.append("halt answered")

    for t in threads:
        t.join(timeout=START_S)
    assert code == 202 and body["status"] == "delivered" and body["action"] == "halt", body
    assert halt_in_control and halt_in_control["reason"] == "starvation drill", halt_in_control
    assert events[:2] == ["halt sent", "halt answered"], events  # before ANY waiting request returned
    assert len(events) == 2 + waiters, console.server_log_tail()
    # The waiters did wait their whole cap: the kernel never answers, so they report "delivered".
    assert {(c, b["status"]) for c, b in answers.values()} == {(202, "delivered")}, answers


def test_the_procfile_and_the_systemd_unit_use_the_tested_web_server_settings():
    procfile_web = [line for line in (REPO / "Procfile").read_text().splitlines() if line.startswith("web:")]
    unit = [line for line in (REPO / "docs" / "deployment.md").read_text().splitlines()
            if line.startswith("ExecStart=") and "gunicorn" in line]
    assert len(procfile_web) == 1 and len(unit) == 1
    for command in procfile_web + unit:
        assert "-c foresight_site/gunicorn.conf.py foresight_site.wsgi" in command, command
        assert not any(flag in command for flag in ("--workers", "--threads", "-w ", "--worker-class", "-k ")), command
