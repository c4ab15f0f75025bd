"""A throwaway PostgreSQL for the tests: production's database, really running.

Debian's server (package ``postgresql``, installed by scripts/system-deps.sh; binaries in
/usr/lib/postgresql/<version>/bin) runs a cluster made for one test run: ``initdb`` in a temp
folder, its unix socket in that folder, TCP on a free loopback port, trust authentication
(nothing but this machine's loopback reaches it), ``fsync=off`` (a crash only loses a test
database). PostgreSQL refuses to run as root: as root (CI) the cluster runs as the ``postgres``
user the package creates (``runuser``). Stopping it removes the folder: nothing is left behind.

``make test`` runs the console's suites a second time through this module::

    python -m tests.support.postgres -- python -m pytest tests/trading

starts a cluster, runs the command with ``DATABASE_URL`` pointing at it and
``FORESIGHT_TEST_DATABASE=postgres`` (tests/conftest.py checks that the two agree), stops
the cluster whatever the command did (also on Ctrl-C or SIGTERM), and exits with the
command's code. pytest-django then creates its ``test_foresight`` database in that cluster.
"""
from __future__ import annotations

import argparse
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

from tests.support.ports import free_port

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "foresight"
DATABASE = "foresight"
SERVICE_USER = "postgres"  # Debian's package creates it; the server runs as it when we are root
TEST_DATABASE_ENV = "FORESIGHT_TEST_DATABASE"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries, or the cluster did not start: the message says what to do."""


def server_bin_dir() -> Path:
    """The newest installed server's bin folder (``PG_BIN`` overrides it)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    versions = sorted((p for p in PG_ROOT.glob("*/bin/initdb")), key=lambda p: _version_key(p.parent.parent.name))
    if not versions:
        raise PostgresUnavailable(
            f"no PostgreSQL server under {PG_ROOT}: run scripts/system-deps.sh (as root), which installs "
            "Debian's postgresql package")
    return versions[-1].parent


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name)) or (0,)


class PostgresCluster:
    """One cluster in its own temp folder. ``start()`` returns it serving; ``stop()`` stops it
    and removes the folder (both are safe to call twice). Also a context manager."""

    def __init__(self, *, port: int | None = None, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or server_bin_dir()
        self.port = port or free_port()
        self.root: Path | None = None
        self.running = False
        self._as_service_user = os.geteuid() == 0

    # ------------------------------------------------------------------ paths, urls

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "socket"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "server.log"

    def url(self, database: str = DATABASE) -> str:
        """A DATABASE_URL for foresight_site.settings (TCP on loopback)."""
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "PostgresCluster":
        self.root = Path(tempfile.mkdtemp(prefix="foresight-pg-"))
        try:
            self.socket_dir.mkdir()
            if self._as_service_user:
                try:
                    service = pwd.getpwnam(SERVICE_USER)
                except KeyError:
                    raise PostgresUnavailable(
                        f"running as root and there is no {SERVICE_USER!r} user to run PostgreSQL as "
                        "(Debian's postgresql package creates it): run scripts/system-deps.sh") from None
                for path in (self.root, self.socket_dir):
                    os.chown(path, service.pw_uid, service.pw_gid)
            self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                      "--no-locale", "--no-sync")
            options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                       f"-c unix_socket_directories={self.socket_dir} -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=200")
            self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w", "-t", "60",
                      "start")
            self.running = True
            self._run("createdb", "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, DATABASE)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            if self.running or (self.root / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "60", "stop",
                          check=False)
        finally:
            self.running = False
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "PostgresCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / program), *args]
        if self._as_service_user:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            log = ""
            if self.root is not None and self.log_path.exists():
                log = "\nserver log:\n" + self.log_path.read_text(errors="replace")[-3000:]
            raise PostgresUnavailable(f"{program} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}")
        return done


def database_url_of(settings_dict: dict) -> str:
    """A DATABASE_URL for the database a Django connection uses (pytest-django's test database,
    once it is set up): for child processes of a test that must share it."""
    user = settings_dict.get("USER") or ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{user}@{host}:{port}/{settings_dict['NAME']}"


def postgres_url_in_use() -> str | None:
    """This run's DATABASE_URL when it is PostgreSQL (the suite runs through this module), else None."""
    url = os.environ.get("DATABASE_URL", "").strip()
    return url if url.split(":", 1)[0] in ("postgres", "postgresql") else None


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new empty database on the server of ``server_url``, for the processes a test starts
    (a console under gunicorn); dropped afterwards. Its DATABASE_URL."""
    import psycopg  # the `test` extra; only the PostgreSQL run gets here

    parts = urlsplit(server_url)
    name = f"scratch_{os.getpid()}_{secrets.token_hex(4)}"
    admin = urlunsplit(("postgresql", parts.netloc, "/postgres", "", ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the ``finally`` that stops the cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.postgres",
                                     description="Run a command against a throwaway PostgreSQL cluster.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command (after --), e.g. python -m pytest")
    command = parser.parse_args(argv).command
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("no command given")
    signal.signal(signal.SIGTERM, _terminate)
    cluster = PostgresCluster()
    child: subprocess.Popen | None = None
    try:
        cluster.start()
        print(f"PostgreSQL ({cluster.bin_dir.parent.name}) for the tests at {cluster.url()}", flush=True)
        env = dict(os.environ, DATABASE_URL=cluster.url(), **{TEST_DATABASE_ENV: "postgres"})
        child = subprocess.Popen(command, env=env)
        return child.wait()
    except PostgresUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
