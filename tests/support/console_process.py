"""The one launcher of a real console: ``manage.py`` commands and a web server (gunicorn or
runserver) on one environment, driven only over HTTP and the command line.

:class:`ConsoleProcess` runs ``manage.py`` in the checkout, starts the web server on a free
loopback port in a session of its own (its output in a log file under ``root``), waits until
``/api/health`` answers, talks JSON to the API, and ends every process it started by a kill
of its whole group. What a test or a benchmark sets up around it (its settings, its users,
its kernel) stays with that test.
"""
from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.checkout import PYTHON, REPO
from tests.support.ports import free_port
from tests.support.processes import clean_env, kill_group, log_tail, spawn
from tests.support.waiting import wait_until

# The web server's documented settings (Procfile, docs/deployment.md's systemd unit).
GUNICORN_CONF = REPO / "foresight_site" / "gunicorn.conf.py"
# gunicorn reads these over gunicorn.conf.py: a developer's shell must not change the worker
# model a test runs under.
GUNICORN_OVERRIDES = ("WEB_CONCURRENCY", "GUNICORN_CMD_ARGS")
TIMEOUT_S = 90.0  # generous: a start or a command on a loaded 2-core machine
HEALTH_PROBE_S = 5.0


def console_env(*, database_url: str, settings: str = "foresight_site.settings", drop: Sequence[str] = (),
                **extra: str) -> dict[str, str]:
    """The environment of a test's console: its database and settings module, output unbuffered
    (so the log is complete when a test fails), and none of the developer's FORESIGHT_* knobs,
    gunicorn overrides or the names in ``drop``."""
    return clean_env(drop=(*GUNICORN_OVERRIDES, *drop), DJANGO_SETTINGS_MODULE=settings,
                     DATABASE_URL=database_url, PYTHONUNBUFFERED="1", **extra)


class ConsoleDied(AssertionError):
    """The web server ended while something was waiting on it."""


class ConsoleProcess:
    """The console's processes under ``root`` (their logs go there), all run with ``env``.

    ``timeout`` bounds a ``manage.py`` command, the server's start and an API request unless a
    call names its own.
    """

    def __init__(self, root: Path, env: Mapping[str, str], *, timeout: float = TIMEOUT_S) -> None:
        self.root = Path(root)
        self.env = dict(env)
        self.timeout = timeout
        self.server: subprocess.Popen | None = None
        self.server_log: Path | None = None
        self.procs: list[subprocess.Popen] = []  # the server and every spawn_manage(), for stop()
        self.port: int | None = None
        self.base_url = ""

    # ------------------------------------------------------------ manage.py

    def manage(self, *args: str, check: bool = True, timeout: float | None = None,
               env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """``manage.py <args>`` to its end (with ``check``, it must succeed); ``env`` replaces
        the console's environment for this one command."""
        done = subprocess.run([PYTHON, "manage.py", *args], cwd=REPO, env=dict(env if env is not None else self.env),
                              capture_output=True, text=True, timeout=timeout or self.timeout)
        if check and done.returncode != 0:  # raised, not asserted: the benchmarks rely on it too
            raise AssertionError(f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}")
        return done

    def spawn_manage(self, name: str, *args: str) -> subprocess.Popen:
        """``manage.py <args>`` in the background, its output in ``<root>/<name>.log``."""
        proc = spawn([PYTHON, "manage.py", *args], env=self.env, log_path=self.root / f"{name}.log")
        self.procs.append(proc)
        return proc

    # ------------------------------------------------------------ the web server

    def start_gunicorn(self, *flags: str, conf: Path | None = GUNICORN_CONF,
                       timeout: float | None = None) -> "ConsoleProcess":
        """The documented command (``-c foresight_site/gunicorn.conf.py``) on a free port, plus
        ``flags``; ``conf=None`` leaves the settings to ``flags``. Returns once it serves."""
        port = free_port()
        config = ["-c", str(conf)] if conf is not None else []
        args = [PYTHON, "-m", "gunicorn", *config, "foresight_site.wsgi", "--bind", f"127.0.0.1:{port}", *flags]
        return self._serve(args, port=port, log_path=self.root / "gunicorn.log", timeout=timeout)

    def start_runserver(self, *, timeout: float | None = None) -> "ConsoleProcess":
        """Django's development server (no reloader) on a free port. Returns once it serves."""
        port = free_port()
        args = [PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        return self._serve(args, port=port, log_path=self.root / "server.log", timeout=timeout)

    def _serve(self, args: list[str], *, port: int, log_path: Path, timeout: float | None) -> "ConsoleProcess":
        assert self.server is None, "this console's web server is already started"
        self.server = spawn(args, env=self.env, log_path=log_path)
        self.server_log = log_path
        self.procs.append(self.server)
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        what = f"the console's web server on port {port}"
        # Refused or cut connections mean "not up yet"; a dead server aborts the wait.
        wait_until(lambda: self.api("GET", "/api/health", timeout=HEALTH_PROBE_S)[0] == 200,
                   timeout=timeout or self.timeout, what=what, poll=0.1, transient=(OSError,),
                   abort=lambda: self.check_alive(what))
        return self

    def check_alive(self, what: str = "its work") -> None:
        if self.server is not None and self.server.poll() is not None:
            raise ConsoleDied(f"the web server exited ({self.server.returncode}) waiting for {what}; the end "
                              f"of {self.server_log}:\n{self.server_log_tail()}")

    def server_log_tail(self, lines: int = 60) -> str:
        return log_tail(self.server_log, lines) if self.server_log is not None else "(not started)"

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
        """``sig`` to every process this console started (their whole groups)."""
        for proc in self.procs:
            kill_group(proc, sig, timeout)

    # ------------------------------------------------------------ HTTP

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None,
            timeout: float | None = None) -> tuple[int, Any]:
        """The status and the JSON body (None if empty) of one request; an error's body that is
        not JSON comes back as text. A success that is not JSON raises: the API always answers JSON."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")
