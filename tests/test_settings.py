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

from foresight_site.environment import DEV_SECRET_KEY, database_from_url

ENV_NAMES = (
    "FORESIGHT_ENV",
    "FORESIGHT_SECRET_KEY",
    "FORESIGHT_DEBUG",
    "FORESIGHT_ALLOWED_HOSTS",
    "FORESIGHT_CSRF_TRUSTED_ORIGINS",
    "FORESIGHT_SECURE_COOKIES",
    "FORESIGHT_SSL_REDIRECT",
    "FORESIGHT_HSTS_SECONDS",
    "FORESIGHT_HSTS_INCLUDE_SUBDOMAINS",
    "FORESIGHT_HSTS_PRELOAD",
    "FORESIGHT_PROXY_SSL_HEADER",
    "FORESIGHT_SESSION_AGE_S",
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


# A secret as docs/deployment.md says to make one (secrets.token_urlsafe(50)).
REAL_SECRET = "Vq3v0s9Jm1kq7ZC2xG5b8TtYw4nHfR6pLd0aEoUiS3zXcN7yMeKjQ1rBgWhP9uFv"


def production_env(sqlite_url: str, **changes: str) -> dict[str, str]:
    """The documented production configuration (docs/deployment.md), on SQLite for the test."""
    env = {"FORESIGHT_ENV": "production", "FORESIGHT_SECRET_KEY": REAL_SECRET,
           "FORESIGHT_ALLOWED_HOSTS": "console.example.com",
           "FORESIGHT_CSRF_TRUSTED_ORIGINS": "https://console.example.com", "DATABASE_URL": sqlite_url}
    env.update(changes)
    return {k: v for k, v in env.items() if v is not None}


def test_production_starts_with_a_real_secret_and_debug_off(repo_root, sqlite_url):
    values = settings_json(
        repo_root,
        "SECRET_KEY",
        "DEBUG",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_PROXY_SSL_HEADER",
        **production_env(sqlite_url),
    )
    assert values == {
        "SECRET_KEY": REAL_SECRET,
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_PROXY_SSL_HEADER": None,
    }


@pytest.mark.parametrize("changes, named", [
    ({"FORESIGHT_SECRET_KEY": "x"}, "FORESIGHT_SECRET_KEY"),
    ({"FORESIGHT_SECRET_KEY": "a-real-secret-from-the-vault"}, "FORESIGHT_SECRET_KEY"),  # 28 characters
    ({"FORESIGHT_SECRET_KEY": "ab" * 40}, "FORESIGHT_SECRET_KEY"),  # long but two characters
    ({"FORESIGHT_SECRET_KEY": "django-insecure-" + REAL_SECRET}, "FORESIGHT_SECRET_KEY"),
    ({"FORESIGHT_DEBUG": "true"}, "FORESIGHT_DEBUG"),
    ({"FORESIGHT_SECURE_COOKIES": "false"}, "FORESIGHT_SECURE_COOKIES"),
    ({"FORESIGHT_ALLOWED_HOSTS": "*"}, "FORESIGHT_ALLOWED_HOSTS"),
    ({"FORESIGHT_PROXY_SSL_HEADER": "X-Forwarded-Proto"}, "FORESIGHT_PROXY_SSL_HEADER"),
], ids=["one-char", "short", "repetitive", "insecure-prefix", "debug", "insecure-cookies", "any-host",
        "proxy-header-without-value"])
def test_production_refuses_unsafe_values_naming_the_variable(repo_root, sqlite_url, changes, named):
    done = run_python(repo_root, "import foresight_site.settings", **production_env(sqlite_url, **changes))
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert named in done.stderr


def test_the_same_values_are_accepted_in_development(repo_root):
    values = settings_json(repo_root, "DEBUG", "SECRET_KEY", FORESIGHT_SECRET_KEY="x", FORESIGHT_DEBUG="true")
    assert values == {"DEBUG": True, "SECRET_KEY": "x"}


def test_proxy_ssl_header_is_configurable(repo_root, sqlite_url):
    values = settings_json(repo_root, "SECURE_PROXY_SSL_HEADER",
                           **production_env(sqlite_url, FORESIGHT_PROXY_SSL_HEADER="X-Forwarded-Proto: https"))
    assert values == {"SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}


def test_sessions_last_hours_not_weeks_and_are_configurable(repo_root):
    assert settings_json(repo_root, "SESSION_COOKIE_AGE") == {"SESSION_COOKIE_AGE": 8 * 3600}
    assert settings_json(repo_root, "SESSION_COOKIE_AGE", FORESIGHT_SESSION_AGE_S="900") == {"SESSION_COOKIE_AGE": 900}
    done = run_python(repo_root, "import foresight_site.settings", FORESIGHT_SESSION_AGE_S="0")
    assert done.returncode != 0 and "FORESIGHT_SESSION_AGE_S" in done.stderr


def test_check_deploy_is_clean_in_the_documented_production_configuration(repo_root, sqlite_url):
    done = run_python(repo_root, "import sys; from django.core.management import execute_from_command_line; "
                      "execute_from_command_line(['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'])",
                      DJANGO_SETTINGS_MODULE="foresight_site.settings", **production_env(sqlite_url))
    assert done.returncode == 0, done.stderr
    assert "no issues" in (done.stdout + done.stderr)
    # ... and the same check does fail where production is weakened within what settings allow.
    weakened = run_python(repo_root, "from django.core.management import execute_from_command_line; "
                          "execute_from_command_line(['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'])",
                          DJANGO_SETTINGS_MODULE="foresight_site.settings",
                          **production_env(sqlite_url, FORESIGHT_HSTS_SECONDS="0", FORESIGHT_SSL_REDIRECT="false"))
    assert weakened.returncode != 0
    assert "security.W004" in weakened.stderr and "security.W008" in weakened.stderr


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
