"""Fixtures for the console on Celery + Redis: a real ``redis-server``, real ``celery worker``
and ``celery beat`` subprocesses, and a console process, all on one file SQLite database.

- :class:`RedisServer` runs ``redis-server`` on a free port in a temp dir (``--save ""
  --appendonly no`` unless asked), can be killed and started again on the same port, and is
  killed at teardown.
- :class:`Cluster` holds the database (migrated once per session, copied per test) and the
  environment every process gets (DATABASE_URL, REDIS_URL, the FORESIGHT_* knobs; each worker
  its host's kernels, :func:`host_kernels`); it starts
  workers (``celery -A foresight_site worker -Q ...``), beat, and a :class:`ConsoleShell`,
  and kills every process it started at teardown, whatever the test did.
- :class:`ConsoleShell` is a long-lived Django process that runs snippets of Python sent to
  it (the test process itself never opens the console's database with Django): what an API
  request or a management command would do, without paying Django's start-up per call.

Kernels come from the ``kernels`` fixture of tests/integration/conftest.py (real
``runkernel --demo --speed 600`` processes; they need no database).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.checkout import REPO
from tests.support.ledger_reader import sqlite_rows
from tests.support.ports import free_port
from tests.support.processes import clean_env, kill_group, spawn
from tests.support.waiting import wait_until

WAIT_S = 60.0


def host_kernels(**state_dirs: Path) -> str:
    """FORESIGHT_HOST_KERNELS for a worker: ``host_kernels(alpha=dir_a)`` → "alpha=/abs/dir_a"."""
    return ",".join(f"{name}={Path(d).resolve()}" for name, d in state_dirs.items())


# ================================================================== redis-server


class RedisServer:
    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, appendonly: bool = False) -> "RedisServer":
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(exe).exists():
            pytest.fail("redis-server is not installed: run scripts/system-deps.sh (apt-get install redis-server)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                "--save", "", "--appendonly", "yes" if appendonly else "no", "--daemonize", "no",
                "--protected-mode", "no", "--logfile", str(self.root / f"redis-{self.starts}.log")]
        if appendonly:
            args += ["--appendfsync", "always"]
        self.proc = spawn(args, env=os.environ, log_path=self.root / f"redis-{self.starts}.out", cwd=self.root)
        wait_until(self.ping, timeout=20, what=f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (nothing is saved)."""
        if self.proc is not None:
            kill_group(self.proc)
            wait_until(lambda: not self.ping(), timeout=10, what="redis-server to stop")

    def llen(self, key: str) -> int:
        import redis

        return int(redis.Redis(port=self.port).llen(key))


# ================================================================== the console's processes


SHELL_LOOP = textwrap.dedent('''\
    import json, sys, traceback
    import django
    django.setup()
    from django.db import close_old_connections
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        close_old_connections()
        namespace = {"result": None}
        try:
            exec(request["code"], namespace)
            reply = {"ok": True, "result": namespace["result"]}
        except BaseException:
            reply = {"ok": False, "error": traceback.format_exc()}
        print(json.dumps(reply, default=str), flush=True)
''')


class ConsoleShell:
    """A Django process of the console: ``run(code)`` execs ``code`` there and returns its ``result``."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.proc = spawn([sys.executable, "-u", "-c", SHELL_LOOP], env=env, log_path=log_path, pipes=True)
        ready = self.proc.stdout.readline()
        assert ready.strip(), f"the console shell did not start:\n{log_path.read_text()[-3000:]}"

    def run(self, code: str, **values: Any) -> Any:
        """Run ``code`` (dedented); names in ``values`` are bound first (JSON values only)."""
        prelude = "".join(f"{k} = json.loads({json.dumps(json.dumps(v))})\n" for k, v in values.items())
        self.proc.stdin.write(json.dumps({"code": "import json\n" + prelude + textwrap.dedent(code)}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the console shell died"
        reply = json.loads(line)
        assert reply["ok"], reply["error"]
        return reply["result"]

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        kill_group(self.proc)


class Proc:
    def __init__(self, name: str, proc: subprocess.Popen, log_path: Path) -> None:
        self.name, self.proc, self.log_path = name, proc, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL to the worker and its pool processes: no shutdown, no ack, nothing."""
        kill_group(self.proc, signal.SIGKILL)


class Cluster:
    def __init__(self, root: Path, db_template: Path, redis: RedisServer) -> None:
        self.root = root
        self.redis = redis
        self.db = root / "console.sqlite3"
        shutil.copyfile(db_template, self.db)
        self.procs: list[Proc] = []
        self.shells: list[ConsoleShell] = []
        self.settings: dict[str, str] = {
            "FORESIGHT_HOST_QUEUES": "host-a,host-b",
            "FORESIGHT_SYNC_INTERVAL_S": "0.5",
            "FORESIGHT_STALE_AFTER_S": "10",
            "FORESIGHT_CELERY_RESTORE_INTERVAL": "1",
            "FORESIGHT_AUDIT_SPOOL": str(root / "audit-spool.jsonl"),
            "FORESIGHT_STRATEGIES_DIR": str(REPO / "strategies"),
        }

    def env(self, **extra: str) -> dict[str, str]:
        env = clean_env(DJANGO_SETTINGS_MODULE="foresight_site.settings", DATABASE_URL=f"sqlite:///{self.db}",
                        REDIS_URL=self.redis.url, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        env.update(self.settings)
        env.update(extra)
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        log_path = self.root / f"{name}.log"
        p = Proc(name, spawn(args, env=env, log_path=log_path), log_path)
        self.procs.append(p)
        return p

    def worker(self, name: str, queues: str, *, concurrency: int = 2, wait: bool = True, **env: str) -> Proc:
        """``celery -A foresight_site worker -Q <queues>``; waits until it says ready."""
        before = len(self.log_of(name))
        p = self._spawn(name, [sys.executable, "-m", "celery", "-A", "foresight_site", "worker", "-Q", queues,
                               "-n", f"{name}@%h", "-c", str(concurrency), "--loglevel", "INFO",
                               "--without-gossip", "--without-mingle"], self.env(**env))
        if wait:
            wait_until(lambda: "ready." in p.log()[before:] or not p.alive(), timeout=WAIT_S,
                       what=f"worker {name} to be ready")
            assert p.alive(), f"worker {name} died:\n{p.log()[-3000:]}"
        return p

    def beat(self, **env: str) -> Proc:
        return self._spawn("beat", [sys.executable, "-m", "celery", "-A", "foresight_site", "beat",
                                    "--schedule", str(self.root / "beat-schedule"), "--pidfile", "",
                                    "--loglevel", "INFO"], self.env(**env))

    def manage(self, name: str, *args: str, **env: str) -> Proc:
        """A long-running ``manage.py`` command (``syncstatus --loop``...) in the background."""
        return self._spawn(name, [sys.executable, "manage.py", *args], self.env(**env))

    def shell(self, **env: str) -> ConsoleShell:
        shell = ConsoleShell(self.env(**env), self.root / f"shell-{len(self.shells)}.log")
        self.shells.append(shell)
        return shell

    def log_of(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def rows(self, sql: str, args: tuple = ()) -> list[dict]:
        return sqlite_rows(self.db, sql, args)

    def close(self) -> None:
        for shell in self.shells:
            shell.close()
        for p in self.procs:
            kill_group(p.proc)


@pytest.fixture(scope="session")
def console_db_template(tmp_path_factory) -> Path:
    """The console's schema, migrated once (``manage.py migrate``) and copied for each test."""
    path = tmp_path_factory.mktemp("console-db") / "template.sqlite3"
    env = clean_env(drop=("REDIS_URL",), DJANGO_SETTINGS_MODULE="foresight_site.settings",
                    DATABASE_URL=f"sqlite:///{path}")
    done = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    con = sqlite3.connect(path)  # fold the WAL in: a copy of the file alone is the whole database
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server.start()
    server.kill()


@pytest.fixture
def cluster(tmp_path: Path, console_db_template: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    c = Cluster(tmp_path, console_db_template, redis_server)
    try:
        yield c
    finally:
        c.close()
