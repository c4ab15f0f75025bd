"""Issue 13, item 1: the files the console makes (its SQLite database with -wal/-shm, their
folder, the audit spool with its lock) are private to the service user from the start, and
a file that is not stops production (check, migrate, gunicorn) and warns in development.

Settings are read at import, so each configuration runs in a fresh interpreter, with the
permissive umask (022) a service may well have."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRET = "Vq3v0s9Jm1kq7ZC2xG5b8TtYw4nHfR6pLd0aEoUiS3zXcN7yMeKjQ1rBgWhP9uFv"


def console_env(tmp_path: Path, *, production: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORESIGHT_", "DATABASE_URL", "REDIS_URL"))}
    env.update(DJANGO_SETTINGS_MODULE="foresight_site.settings",
               DATABASE_URL=f"sqlite:///{tmp_path / 'var' / 'console.sqlite3'}",
               FORESIGHT_AUDIT_SPOOL=str(tmp_path / "spool" / "audit-spool.jsonl"))
    if production:
        env.update(FORESIGHT_ENV="production", FORESIGHT_SECRET_KEY=SECRET,
                   FORESIGHT_ALLOWED_HOSTS="console.example.com")
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=lambda: os.umask(0o022))


def mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):o}"


MAKE_FILES = """
import json, os, django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from trading import services
from django.contrib.auth.models import User
User.objects.create_user("tom")  # a write, so the -wal and -shm exist while this connection is open
services.audit_spool(action="halt.engaged", actor=services.Actor.cli())
name = str(django.conf.settings.DATABASES["default"]["NAME"])
spool = services.audit_spool_path()
paths = [os.path.dirname(name), name, name + "-wal", name + "-shm", spool.parent, spool, str(spool) + ".lock"]
print(json.dumps({str(p): oct(os.stat(p).st_mode & 0o777) for p in paths if os.path.exists(p)}))
"""


def test_the_console_makes_its_files_private_whatever_the_umask(tmp_path):
    done = run([sys.executable, "-c", MAKE_FILES], console_env(tmp_path))
    assert done.returncode == 0, done.stderr
    modes = json.loads(done.stdout.strip().splitlines()[-1])
    db = tmp_path / "var" / "console.sqlite3"
    spool = tmp_path / "spool" / "audit-spool.jsonl"
    assert modes == {
        str(tmp_path / "var"): "0o700", str(db): "0o600", f"{db}-wal": "0o600", f"{db}-shm": "0o600",
        str(spool.parent): "0o700", str(spool): "0o600", f"{spool}.lock": "0o600",
    }
    # ... and then nothing to report.
    check = run([sys.executable, "manage.py", "check", "--fail-level", "WARNING"], console_env(tmp_path, production=True))
    assert check.returncode == 0, check.stderr


@pytest.fixture
def readable_database(tmp_path) -> Path:
    """A database made by an older version: in a folder and a file others can read."""
    (tmp_path / "var").mkdir(mode=0o755)
    os.chmod(tmp_path / "var", 0o755)
    db = tmp_path / "var" / "console.sqlite3"
    db.touch()
    os.chmod(db, 0o644)
    return db


def test_production_refuses_to_start_on_a_readable_database(tmp_path, readable_database):
    env = console_env(tmp_path, production=True)
    for command in (["check"], ["migrate", "--noinput"]):
        done = run([sys.executable, "manage.py", *command], env)
        assert done.returncode != 0, command
        assert "foresight.E001" in done.stderr
        assert f"HINT: chmod 600 {readable_database}" in done.stderr
        assert f"chmod 700 {readable_database.parent}" in done.stderr
    assert mode(readable_database) == "644"  # told, not changed behind the operator's back


def test_gunicorn_refuses_to_serve_on_a_readable_database(tmp_path, readable_database):
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent))
    if gunicorn is None:
        pytest.fail("gunicorn is not installed in the venv (pip install -e '.[ops]')")
    done = run([gunicorn, "--preload", "--bind", "127.0.0.1:0", "--workers", "1", "foresight_site.wsgi"],
               console_env(tmp_path, production=True))
    assert done.returncode != 0
    assert "refuses to start" in done.stderr and "chmod 600" in done.stderr


def test_development_warns_about_a_readable_database_and_runs(tmp_path, readable_database):
    done = run([sys.executable, "manage.py", "check"], console_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "foresight.W001" in done.stderr and f"chmod 600 {readable_database}" in done.stderr
