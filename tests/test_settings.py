"""foresight_site.settings: the production guard, DATABASE_URL, Celery defaults, and the health endpoint.

Settings are read at import, so each environment is tried in a fresh interpreter.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from foresight_site.settings import DEV_SECRET_KEY, database_from_url

ENV_NAMES = (
    "FORESIGHT_ENV",
    "FORESIGHT_SECRET_KEY",
    "FORESIGHT_DEBUG",
    "FORESIGHT_ALLOWED_HOSTS",
    "FORESIGHT_STATE_DIR",
    "FORESIGHT_CELERY_VISIBILITY_TIMEOUT",
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
)


def run_python(repo_root: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo_root,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_json(repo_root: Path, *names: str, **env: str) -> dict:
    code = (
        "import json; from foresight_site import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {names!r}}}, default=str))"
    )
    done = run_python(repo_root, code, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'console.sqlite3'}"


@pytest.mark.parametrize("secret", [None, "", DEV_SECRET_KEY], ids=["missing", "empty", "dev-default"])
def test_production_refuses_to_start_without_a_real_secret(repo_root, secret):
    env = {"FORESIGHT_ENV": "production"}
    if secret is not None:
        env["FORESIGHT_SECRET_KEY"] = secret
    done = run_python(repo_root, "import foresight_site.settings", **env)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "FORESIGHT_SECRET_KEY" in done.stderr


def test_production_starts_with_a_real_secret_and_debug_off(repo_root, sqlite_url):
    values = settings_json(
        repo_root,
        "SECRET_KEY",
        "DEBUG",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        FORESIGHT_ENV="production",
        FORESIGHT_SECRET_KEY="a-real-secret-from-the-vault",
        DATABASE_URL=sqlite_url,
    )
    assert values == {
        "SECRET_KEY": "a-real-secret-from-the-vault",
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
    }


def test_an_unknown_environment_name_is_refused(repo_root):
    done = run_python(repo_root, "import foresight_site.settings", FORESIGHT_ENV="prod")
    assert done.returncode != 0
    assert "FORESIGHT_ENV" in done.stderr


def test_development_defaults(repo_root):
    values = settings_json(
        repo_root, "DEBUG", "ALLOWED_HOSTS", "SECRET_KEY", "TIME_ZONE", "USE_TZ", "SESSION_COOKIE_SECURE"
    )
    assert values == {
        "DEBUG": True,
        "SESSION_COOKIE_SECURE": False,
        "ALLOWED_HOSTS": ["localhost", "127.0.0.1", "[::1]", "testserver"],
        "SECRET_KEY": DEV_SECRET_KEY,
        "TIME_ZONE": "UTC",
        "USE_TZ": True,
    }


def test_database_url_postgres_from_the_environment(repo_root):
    values = settings_json(
        repo_root,
        "DATABASES",
        DATABASE_URL="postgres://trader:s3cr%40t@db.internal:6543/foresight?sslmode=require",
    )
    assert values["DATABASES"]["default"] == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "foresight",
        "USER": "trader",
        "PASSWORD": "s3cr@t",
        "HOST": "db.internal",
        "PORT": "6543",
        "OPTIONS": {"sslmode": "require"},
    }


def test_database_url_postgresql_scheme_without_port_or_password():
    db = database_from_url("postgresql://trader@localhost/foresight")
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql",
        "foresight",
        "trader",
        "",
        "localhost",
        "",
    )


def test_database_url_sqlite_paths(tmp_path):
    assert database_from_url("sqlite:///var/x.sqlite3", base_dir=tmp_path)["NAME"] == tmp_path / "var/x.sqlite3"
    assert database_from_url("sqlite:////srv/db/x.sqlite3")["NAME"] == Path("/srv/db/x.sqlite3")
    assert database_from_url("sqlite://:memory:")["NAME"] == ":memory:"


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "postgres://u:p@h:5432/", "postgres://u:p@h:notaport/db"])
def test_database_url_rejects_what_it_cannot_serve(url):
    with pytest.raises(ImproperlyConfigured):
        database_from_url(url)


def test_sqlite_connection_uses_wal_and_immediate_transactions(repo_root, sqlite_url, tmp_path):
    code = (
        "import json, django; django.setup(); from django.db import connection; "
        "c = connection.cursor(); "
        "mode = c.execute('PRAGMA journal_mode').fetchone()[0]; "
        "sync = c.execute('PRAGMA synchronous').fetchone()[0]; "
        "print(json.dumps([mode, sync, connection.transaction_mode]))"
    )
    done = run_python(repo_root, code, DJANGO_SETTINGS_MODULE="foresight_site.settings", DATABASE_URL=sqlite_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["wal", 1, "IMMEDIATE"]  # synchronous 1 = NORMAL
    assert (tmp_path / "console.sqlite3").exists()


def test_celery_runs_tasks_eagerly_without_redis(repo_root):
    values = settings_json(
        repo_root, "CELERY_TASK_ALWAYS_EAGER", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"
    )
    assert values == {
        "CELERY_TASK_ALWAYS_EAGER": True,
        "CELERY_BROKER_URL": "memory://",
        "CELERY_RESULT_BACKEND": None,
    }


def test_celery_uses_redis_when_configured(repo_root):
    values = settings_json(
        repo_root,
        "CELERY_TASK_ALWAYS_EAGER",
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "CELERY_BROKER_TRANSPORT_OPTIONS",
        REDIS_URL="redis://127.0.0.1:6379/3",
        FORESIGHT_CELERY_VISIBILITY_TIMEOUT="600",
    )
    options = values.pop("CELERY_BROKER_TRANSPORT_OPTIONS")
    assert values == {
        "CELERY_TASK_ALWAYS_EAGER": False,
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/3",
        "CELERY_RESULT_BACKEND": "redis://127.0.0.1:6379/3",
    }
    assert options["visibility_timeout"] == 600
    # A broker that is down must fail a publish fast (the command stays pending), not hang a request.
    assert options["socket_connect_timeout"] > 0


def test_celery_app_reads_the_django_settings(repo_root):
    code = (
        "import django; django.setup(); from foresight_site import celery_app as app; "
        "print(app.conf.broker_url, app.conf.task_acks_late, app.conf.task_reject_on_worker_lost)"
    )
    done = run_python(repo_root, code, DJANGO_SETTINGS_MODULE="foresight_site.settings")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["memory://", "True", "True"]


def test_health_endpoint_answers_ok(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_root_redirects_to_the_admin(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
