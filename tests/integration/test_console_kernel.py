"""The console and a real kernel, each in its own process, on a real SQLite file database.

- the API (``manage.py runserver``) steers a ``runkernel`` through control.json and reports
  what the kernel answered, including a failed reload and a rollback;
- a halt through the API still halts while another connection holds the database's write
  lock, and its audit event reaches the database once the lock is gone;
- ``kernelctl`` halts (and sends commands) with the database unreachable, and the spooled
  audit events are written exactly once when it is back;
- ``syncstatus --loop`` brings outcomes into the audit log with no page open.

The console processes run with a small settings module written into the test's temp dir:
the project's settings, plus a 1 s SQLite busy timeout (instead of 20 s) and a temp spool.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.checkout import REPO
from tests.support.console_process import ConsoleProcess, console_env
from tests.support.kernel_process import WAIT_S, KernelProcess, runkernel_args
from tests.support.ledger_reader import sqlite_rows
from tests.support.status_reader import read_status
from tests.support.strategy_folders import copy_repo_strategies
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

CONSOLE_SETTINGS = """\
from foresight_site.settings import *  # noqa: F401,F403

DATABASES["default"]["OPTIONS"]["timeout"] = 1  # a locked database fails fast in tests
FORESIGHT_AUDIT_SPOOL = {spool!r}
FORESIGHT_STRATEGIES_DIR = {strategies!r}
"""

SETUP_USERS = """\
import json
from django.contrib.auth.models import Group, User
from trading import services
out = {}
for name, group in (("olga", "Operator"), ("rita", "Risk"), ("vic", "Viewer")):
    user = User.objects.create_user(name)
    user.groups.add(Group.objects.get(name=group))
    out[name] = services.token_create(user=user, name="integration")[1]
print(json.dumps(out))
"""


class Console:
    """The console's processes on one temp database, and a kernel on one temp state dir.

    Composes a ConsoleProcess rather than extending it: ``env()`` here is a method (a command
    may run against another database), where ConsoleProcess holds one environment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "console.sqlite3"
        self.spool = root / "audit-spool.jsonl"
        self.state_dir = root / "state"
        self.strategies = root / "strategies"
        self.kernel: KernelProcess | None = None
        self.tokens: dict[str, str] = {}
        (root / "console_test_settings.py").write_text(
            CONSOLE_SETTINGS.format(spool=str(self.spool), strategies=str(self.strategies)))
        copy_repo_strategies(self.strategies)
        self.state_dir.mkdir()
        self.process = ConsoleProcess(root, self.env(), timeout=WAIT_S)

    def env(self, database_url: str | None = None) -> dict[str, str]:
        return console_env(
            settings="console_test_settings",
            PYTHONPATH=os.pathsep.join([str(self.root), str(REPO)]),
            database_url=database_url or f"sqlite:///{self.db}",
            FORESIGHT_API_MAX_WAIT_S="30",  # a reload's checks may take longer than the default 5 s cap here
        )

    @property
    def procs(self) -> list[subprocess.Popen]:
        return self.process.procs

    @property
    def base_url(self) -> str:
        return self.process.base_url

    def manage(self, *args: str, database_url: str | None = None, check: bool = True,
               timeout: float = WAIT_S) -> subprocess.CompletedProcess:
        return self.process.manage(*args, check=check, timeout=timeout, env=self.env(database_url))

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        return self.process.spawn_manage(name, *args)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-4000:]

    # ---------------------------------------------------------------- setup

    def start(self) -> "Console":
        self.manage("migrate", "--noinput", "-v0")
        self.tokens = json.loads(self.manage("shell", "-c", SETUP_USERS).stdout.strip().splitlines()[-1])
        args = runkernel_args(demo=True, speed=600, strategies_dir=self.strategies)
        self.kernel = KernelProcess(self.state_dir, args, env=self.env(), log_path=self.root / "kernel.log").start()
        self.manage("addkernel", "--name", "demo", "--state-dir", str(self.state_dir))
        self.process.start_runserver()
        return self

    def stop(self) -> None:
        self.process.stop()
        if self.kernel is not None:
            self.kernel.cleanup()

    # ---------------------------------------------------------------- the kernel's files, the database

    def status(self) -> dict | None:
        return read_status(self.state_dir)

    def query(self, sql: str, args: tuple = ()) -> list[dict]:
        return sqlite_rows(self.db, sql, args)

    def audit(self, action: str, **where: str) -> list[dict]:
        sql = "SELECT * FROM trading_auditevent WHERE action = ?" + "".join(f" AND {k} = ?" for k in where)
        return self.query(sql, (action, *where.values()))

    def audited(self, action: str, **where: str) -> list[dict]:
        """The events once recorded: a result can reach the console (from the kernel's ledger)
        before the status.json that carries the outcome's details; the next sync, as the sync
        loop runs it, records them."""
        def found() -> list[dict]:
            rows = self.audit(action, **where)
            if not rows:
                self.manage("syncstatus")
            return rows

        return wait_until(found, timeout=WAIT_S, what=f"audit {action} {where}")

    # ---------------------------------------------------------------- HTTP

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None,
            timeout: float = WAIT_S) -> tuple[int, Any]:
        return self.process.api(method, path, body, token, timeout)


@pytest.fixture
def console(tmp_path) -> Iterator[Console]:
    c = Console(tmp_path)
    try:
        yield c.start()
    finally:
        c.stop()


# ===================================================================== the API steers a real kernel


def test_api_commands_reach_the_kernel_and_its_answers_come_back(console):
    olga, rita = console.tokens["olga"], console.tokens["rita"]

    code, body = console.api("POST", "/api/kernels/demo/pause?wait=20", token=olga)
    assert (code, body["status"]) == (202, "applied"), body
    code, body = console.api("GET", "/api/kernels/demo", token=olga)
    assert (code, body["state"]) == (200, "paused")
    code, body = console.api("POST", "/api/kernels/demo/slots/btc-5m/flatten?wait=20", token=olga)
    assert (code, body["status"]) == (202, "applied"), body

    # Viewers read, and only read.
    assert console.api("GET", "/api/kernels/demo/slots", token=console.tokens["vic"])[0] == 200
    assert console.api("POST", "/api/kernels/demo/resume", token=console.tokens["vic"])[0] == 403

    # Slot config: checked against the strategy's Params before anything is sent.
    code, body = console.api("PATCH", "/api/kernels/demo/slots/btc-5m/config",
                             {"params": {"fast": 50, "slow": 20}}, token=rita)
    assert code == 400 and "fast (50) must be smaller than slow (20)" in body["detail"]
    code, body = console.api("PATCH", "/api/kernels/demo/slots/btc-5m/config?wait=20",
                             {"params": {"fast": 9, "slow": 21}, "order_notional": 250.0}, token=rita)
    assert (code, body["status"]) == (202, "applied"), body
    slot = wait_until(lambda: (lambda b: b if b["running_config"].get("order_notional") == 250.0 else None)(
        console.api("GET", "/api/kernels/demo/slots/btc-5m", token=rita)[1]), timeout=WAIT_S,
        what="the new config running")
    assert slot["running_config"]["params"] == {"fast": 9, "slow": 21} and slot["config_drift"] == {}


def test_a_failed_reload_keeps_the_old_version_and_a_good_one_can_be_rolled_back(console):
    olga, rita = console.tokens["olga"], console.tokens["rita"]
    module = console.strategies / "ema_cross.py"
    original = module.read_text()
    old_sha = console.status()["strategies"]["ema_cross"]["sha256"]

    module.write_text(original + "\ndef broken(:\n")
    code, body = console.api("POST", "/api/kernels/demo/reload?wait=30", {"strategy": "ema_cross"}, token=olga)
    assert (code, body["status"]) == (202, "rejected"), body
    assert "syntax error in ema_cross.py" in body["error"]
    assert console.status()["strategies"]["ema_cross"]["sha256"] == old_sha
    failed = console.audited("reload.failed", command_id=body["command_id"])
    assert len(failed) == 1 and "syntax error" in json.loads(failed[0]["payload"])["error"]

    module.write_text(original.replace('"""EMA crossover, long only.', '"""EMA crossover, long only (v2).'))
    code, body = console.api("POST", "/api/kernels/demo/reload?wait=30", {"strategy": "ema_cross"}, token=olga)
    assert (code, body["status"]) == (202, "applied"), body
    loaded = json.loads(console.audited("reload.loaded", command_id=body["command_id"])[0]["payload"])
    assert loaded["old_sha256"] == old_sha and loaded["new_sha256"] != old_sha

    assert console.api("POST", "/api/kernels/demo/rollback", {"strategy": "ema_cross"}, token=olga)[0] == 403
    code, body = console.api("POST", "/api/kernels/demo/rollback?wait=30", {"strategy": "ema_cross"}, token=rita)
    assert (code, body["status"]) == (202, "applied"), body
    wait_until(lambda: console.status()["strategies"]["ema_cross"]["sha256"] == old_sha, timeout=WAIT_S,
               what="status.json to show the rolled-back version")  # written just after the ledger's result
    assert len(console.audited("reload.rolled_back", command_id=body["command_id"])) == 1


# ===================================================================== halt with the database locked


def test_halt_through_the_api_works_while_the_database_is_locked(console):
    olga, rita = console.tokens["olga"], console.tokens["rita"]
    assert console.api("GET", "/api/kernels/demo", token=olga)[0] == 200  # the token is known and fresh

    lock = sqlite3.connect(console.db, timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another connection holds the write lock
    try:
        code, body = console.api("POST", "/api/kernels/demo/halt", {"reason": "database locked"}, token=olga)
        assert code == 202, body
        assert body["audit"] == "spooled" and body["command_id"] is None
        halted = wait_until(lambda: (s := console.status()) and s["state"] == "halted" and s, timeout=WAIT_S,
                            what="status halted")
        assert halted["halt"]["reason"] == "database locked"
        spooled = [json.loads(line) for line in console.spool.read_text().splitlines()]
        assert [e["action"] for e in spooled] == ["halt.engaged"]
        assert lock.execute("SELECT COUNT(*) FROM trading_auditevent WHERE action = 'halt.engaged'").fetchone()[0] == 0
        # Writes other than the halt fail fast, with a JSON error, not a 500.
        code, body = console.api("POST", "/api/kernels/demo/pause", token=olga)
        assert code == 503 and "database" in body["detail"]
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    console.manage("syncstatus")
    console.manage("syncstatus")

    engaged = console.audit("halt.engaged")
    assert len(engaged) == 1
    assert (engaged[0]["actor"], engaged[0]["source"]) == ("olga", "api")
    assert json.loads(engaged[0]["payload"])["spooled"] is True
    assert len(console.audit("halt.observed")) == 1
    assert console.query("SELECT status FROM trading_controlcommand WHERE action = 'halt'") == [{"status": "applied"}]
    assert not console.spool.exists() or console.spool.read_text() == ""

    # Release (Risk only), then the kernel waits paused for a resume.
    assert console.api("POST", "/api/kernels/demo/release", token=olga)[0] == 403
    code, body = console.api("POST", "/api/kernels/demo/release?wait=20", token=rita)
    assert (code, body["status"]) == (202, "applied"), body
    assert console.status()["state"] == "paused"
    code, body = console.api("POST", "/api/kernels/demo/resume?wait=20", token=olga)
    assert (code, body["status"]) == (202, "applied"), body
    assert len(console.audit("halt.cleared")) == 1


# ===================================================================== kernelctl with the database down


def test_kernelctl_halts_and_commands_with_the_database_unreachable(console):
    unreachable = console.root / "no-database-here"
    unreachable.mkdir()  # a folder where the database file should be: SQLite cannot open it
    down = f"sqlite:///{unreachable}"

    halt = console.manage("kernelctl", "--state-dir", str(console.state_dir), "halt", "--reason", "2am",
                          "--wait", database_url=down)
    assert "halt written to control.json" in halt.stdout and "kernel halted since" in halt.stdout
    assert "database unavailable" in halt.stderr and "spooled" in halt.stderr
    flatten = console.manage("kernelctl", "--state-dir", str(console.state_dir), "slot.flatten", "eth-5m",
                             "--wait", database_url=down)
    assert flatten.stdout.strip().endswith("applied"), flatten.stdout + flatten.stderr
    assert "database unavailable" in flatten.stderr
    command_id = flatten.stdout.split()[1]
    assert len(console.spool.read_text().splitlines()) == 2
    assert not console.audit("halt.engaged")

    for _ in range(3):
        console.manage("syncstatus")

    user = console.audit("halt.engaged")[0]["actor"]
    assert "@" in user  # user@host: the OS user of the shell
    assert len(console.audit("halt.engaged", source="cli")) == 1
    assert len(console.audit("command.issued", command_id=command_id, actor=user)) == 1
    assert len(console.audit("command.applied", command_id=command_id)) == 1
    assert console.query("SELECT status FROM trading_controlcommand WHERE command_id = ?", (command_id,)) == [
        {"status": "applied"}]


def test_kernelctl_records_its_actions_as_the_os_user(console):
    done = console.manage("kernelctl", "--state-dir", str(console.state_dir), "slot.pause", "sol-5m", "--wait")
    assert done.stdout.strip().endswith("applied")
    command_id = done.stdout.split()[1]
    issued = console.audit("command.issued", command_id=command_id)
    assert len(issued) == 1 and issued[0]["source"] == "cli" and "@" in issued[0]["actor"]
    assert len(console.audit("command.applied", command_id=command_id)) == 1

    refused = console.manage("kernelctl", "--state-dir", str(console.state_dir), "slot.pause", "nope", check=False)
    assert refused.returncode != 0 and "no slot 'nope'" in refused.stderr


# ===================================================================== syncstatus --loop


def test_syncstatus_loop_audits_outcomes_with_no_page_open(console):
    loop = console.spawn("syncstatus", "syncstatus", "--loop", "--interval", "0.2")
    # Written by hand, as a human at 2am would: no console involved at all.
    (console.state_dir / "cmd.tmp").write_text(json.dumps(
        {"commands": [{"id": "by-hand-7", "action": "slot.pause", "slot": "ada-5m"}]}))
    subprocess.run(["flock", "-w", "5", "control.lock", "mv", "cmd.tmp", "control.json"], cwd=console.state_dir,
                   check=True)

    events = wait_until(lambda: console.audit("command.applied", command_id="by-hand-7"), timeout=WAIT_S,
                        what="the loop's audit event")

    assert events[0]["actor"] == "kernel:demo"
    assert console.query("SELECT state FROM trading_slot WHERE slot_id = 'ada-5m'") == [{"state": "paused"}]
    loop.send_signal(signal.SIGTERM)
    assert loop.wait(30) == 0, console.log("syncstatus")
