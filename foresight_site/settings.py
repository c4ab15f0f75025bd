"""Foresight settings: one module, configured by environment variables (12-factor).

Every variable has a safe local default (SQLite under var/, no Redis, debug on), so a
fresh checkout runs as is. With FORESIGHT_ENV=production the module refuses to load
with a weak secret key, DEBUG on, insecure cookies or no allowed host (production_problems).

    FORESIGHT_ENV                        "development" (default) or "production"
    FORESIGHT_SECRET_KEY                 required in production
    FORESIGHT_DEBUG                      true/false; default true, false in production
    FORESIGHT_ALLOWED_HOSTS              comma list; default localhost,127.0.0.1,[::1],testserver
    FORESIGHT_CSRF_TRUSTED_ORIGINS       comma list, e.g. https://console.example.com; default none
    FORESIGHT_SECURE_COOKIES             session/CSRF cookies over HTTPS only; default true in production
    FORESIGHT_SESSION_AGE_S              how long an admin login lasts, in seconds; default 28800 (8 h)
    FORESIGHT_SSL_REDIRECT               redirect HTTP to HTTPS; default true in production
    FORESIGHT_HSTS_SECONDS               Strict-Transport-Security max-age; default 31536000 in production
    FORESIGHT_HSTS_INCLUDE_SUBDOMAINS    default true in production; FORESIGHT_HSTS_PRELOAD default false
    FORESIGHT_PROXY_SSL_HEADER           behind a TLS-terminating proxy: "X-Forwarded-Proto: https"
    DATABASE_URL                         sqlite:///relative/or/sqlite:////absolute/path, or
                                         postgres://user:pass@host:port/name (postgresql:// too);
                                         default sqlite at var/foresight.sqlite3
    REDIS_URL                            Celery broker and result backend; empty = tasks run eagerly
                                         in the calling process and `syncstatus --loop` does the
                                         periodic sync (docs/deployment.md)
    FORESIGHT_STATE_DIR                  the kernel's control.json/status.json folder; default var/kernel
    FORESIGHT_LOG_LEVEL                  default INFO

The console:

    FORESIGHT_AUDIT_SPOOL                audit events written while the database is down (one
                                         fsynced JSON line each); local to each host; default
                                         var/audit-spool.jsonl
    FORESIGHT_STRATEGIES_DIR             where slot configuration finds a strategy's Params; keep it
                                         the same as the kernel's; default <checkout>/strategies
    FORESIGHT_COMMAND_TTL_S              a command not delivered within this many seconds is
                                         expired (and audited), never sent late; default 300
    FORESIGHT_ADMIN_COMMAND_WAIT_S       how long an admin button waits for the kernel's answer
                                         before it reports "delivered"; default 3
    FORESIGHT_STALE_AFTER_S              seconds without a heartbeat before a kernel is reported
                                         stale (audit event + ERROR log); default 10

Celery (only with REDIS_URL; docs/deployment.md has the layout):

    FORESIGHT_HOST_QUEUES                comma list of the kernel hosts' queues (Kernel.queue):
                                         beat sends sync_host_kernels(<queue>) to each; default none
    FORESIGHT_CONSOLE_QUEUE              queue of the console's own worker: syncs the kernels with no
                                         queue (this machine), the stale check, expiry; default console
    FORESIGHT_SYNC_INTERVAL_S            seconds between two status syncs of a host; default 1.0
    FORESIGHT_CELERY_VISIBILITY_TIMEOUT  seconds before Redis hands an unacknowledged task (a worker
                                         died holding it) to another worker; must stay longer than
                                         the longest retry countdown (30 s); default 3600
    FORESIGHT_CELERY_RESTORE_INTERVAL    seconds between a worker's sweeps for such tasks; default 60
    FORESIGHT_TEST_DELIVERY_PAUSE_S      tests only (refused in production): the delivery task sleeps
                                         this long after writing control.json, before recording it,
                                         so a test can kill -9 the worker inside that window; default 0
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

DEV_SECRET_KEY = "django-insecure-foresight-dev-key-do-not-use-in-production"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false)")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not value >= 0:  # also refuses nan
        raise ImproperlyConfigured(f"{name}={raw!r} must be >= 0")
    return value


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def secret_key_is_weak(key: str) -> bool:
    """Django's own rule (check --deploy, security.W009): short, repetitive or the insecure default."""
    return len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure-") or key == DEV_SECRET_KEY


def production_problems(*, secret_key: str, debug: bool, secure_cookies: bool, allowed_hosts: list[str]) -> list[str]:
    """What production must not run with: each a sentence naming the variable to fix."""
    problems = []
    if secret_key_is_weak(secret_key):
        problems.append("FORESIGHT_SECRET_KEY must be a secret of at least 50 characters (missing, "
                        "too short, too repetitive or the development default); e.g. python -c "
                        "'import secrets; print(secrets.token_urlsafe(50))'")
    if debug:
        problems.append("FORESIGHT_DEBUG must be false (debug pages show settings and tracebacks)")
    if not secure_cookies:
        problems.append("FORESIGHT_SECURE_COOKIES must be true (session and CSRF cookies over HTTPS only)")
    if not allowed_hosts or "*" in allowed_hosts:
        problems.append("FORESIGHT_ALLOWED_HOSTS must name the console's host names (not empty, not *)")
    return problems


def proxy_ssl_header(raw: str) -> tuple[str, str] | None:
    """FORESIGHT_PROXY_SSL_HEADER="X-Forwarded-Proto: https" (the header a TLS-terminating proxy
    sets, and the value that means HTTPS) → Django's ("HTTP_X_FORWARDED_PROTO", "https")."""
    if not raw.strip():
        return None
    name, sep, value = raw.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise ImproperlyConfigured(
            f"FORESIGHT_PROXY_SSL_HEADER={raw!r}: use 'Header-Name: value', e.g. 'X-Forwarded-Proto: https'")
    return "HTTP_" + name.upper().replace("-", "_"), value


SQLITE_OPTIONS = {
    "timeout": 20,
    # Take the write lock at BEGIN, so concurrent writers wait (timeout) instead of
    # failing with "database is locked" when a read transaction upgrades to a write.
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


def sqlite_database(name: str | Path) -> dict:
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": name, "OPTIONS": dict(SQLITE_OPTIONS)}


def database_from_url(url: str, *, base_dir: Path = BASE_DIR) -> dict:
    """Parse a DATABASE_URL into a Django DATABASES entry (sqlite or PostgreSQL only)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///var/x.sqlite3 is relative to the repo, sqlite:////tmp/x.sqlite3 absolute.
        raw_path = unquote(parts.netloc + parts.path)
        raw_path = raw_path[1:] if raw_path.startswith("/") else raw_path
        if not raw_path or raw_path == ":memory:":
            return sqlite_database(":memory:")
        path = Path(raw_path)
        return sqlite_database(path if path.is_absolute() else base_dir / path)
    if scheme in ("postgres", "postgresql"):
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ImproperlyConfigured(f"DATABASE_URL has no database name: {parts.scheme}://…{parts.path}")
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured("DATABASE_URL has an invalid port") from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": unquote(parts.hostname or ""),
            "PORT": str(port) if port else "",
            "OPTIONS": dict(parse_qsl(parts.query)),  # e.g. ?sslmode=require
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {parts.scheme!r} is not supported (use sqlite, postgres or postgresql)"
    )


# --- Core -------------------------------------------------------------------------------

FORESIGHT_ENV = os.environ.get("FORESIGHT_ENV", "").strip().lower() or "development"
if FORESIGHT_ENV not in ("development", "production"):
    # A typo such as "prod" must not quietly fall back to development defaults.
    raise ImproperlyConfigured(f"FORESIGHT_ENV={FORESIGHT_ENV!r}: use development or production")
PRODUCTION = FORESIGHT_ENV == "production"

SECRET_KEY = os.environ.get("FORESIGHT_SECRET_KEY", "").strip() or DEV_SECRET_KEY
DEBUG = env_bool("FORESIGHT_DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env_list("FORESIGHT_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("FORESIGHT_CSRF_TRUSTED_ORIGINS", "")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("FORESIGHT_SECURE_COOKIES", default=PRODUCTION)
# A console session opens the halt and the order controls: hours, not Django's two weeks.
SESSION_COOKIE_AGE = env_int("FORESIGHT_SESSION_AGE_S", 8 * 3600)
if SESSION_COOKIE_AGE <= 0:
    raise ImproperlyConfigured(f"FORESIGHT_SESSION_AGE_S={SESSION_COOKIE_AGE} must be > 0")

# HTTPS: on by default in production (behind a proxy that terminates TLS, name the header it
# sets, or every request looks like plain HTTP and SSL redirect loops).
SECURE_SSL_REDIRECT = env_bool("FORESIGHT_SSL_REDIRECT", default=PRODUCTION)
SECURE_HSTS_SECONDS = env_int("FORESIGHT_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("FORESIGHT_HSTS_INCLUDE_SUBDOMAINS", default=PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("FORESIGHT_HSTS_PRELOAD", default=False)
SECURE_PROXY_SSL_HEADER = proxy_ssl_header(os.environ.get("FORESIGHT_PROXY_SSL_HEADER", ""))
# Preloading is a commitment of the whole domain (and its subdomains) to HTTPS in browsers for
# months, hard to undo: the operator opts in; check --deploy need not nag about it.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

if PRODUCTION:
    _problems = production_problems(secret_key=SECRET_KEY, debug=DEBUG, secure_cookies=SESSION_COOKIE_SECURE,
                                    allowed_hosts=ALLOWED_HOSTS)
    if _problems:
        raise ImproperlyConfigured("FORESIGHT_ENV=production refuses to start: " + "; ".join(_problems))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "kernel",
    "trading",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "foresight_site.urls"
WSGI_APPLICATION = "foresight_site.wsgi.application"
ASGI_APPLICATION = "foresight_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------

_database_url = os.environ.get("DATABASE_URL", "").strip()
DATABASES = {
    "default": database_from_url(_database_url) if _database_url else sqlite_database(VAR_DIR / "foresight.sqlite3")
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3") and DATABASES["default"]["NAME"] != ":memory:":
    # SQLite creates the file but not its folder; a fresh checkout has no var/ yet.
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Internationalisation, static files -------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- The kernel and the console -----------------------------------------------------

FORESIGHT_STATE_DIR = Path(os.environ.get("FORESIGHT_STATE_DIR", "").strip() or VAR_DIR / "kernel")
FORESIGHT_AUDIT_SPOOL = Path(os.environ.get("FORESIGHT_AUDIT_SPOOL", "").strip() or VAR_DIR / "audit-spool.jsonl")
FORESIGHT_STRATEGIES_DIR = Path(os.environ.get("FORESIGHT_STRATEGIES_DIR", "").strip() or BASE_DIR / "strategies")
FORESIGHT_COMMAND_TTL_S = env_float("FORESIGHT_COMMAND_TTL_S", 300.0)
FORESIGHT_ADMIN_COMMAND_WAIT_S = env_float("FORESIGHT_ADMIN_COMMAND_WAIT_S", 3.0)
FORESIGHT_STALE_AFTER_S = env_float("FORESIGHT_STALE_AFTER_S", 10.0)

# --- Celery (read by foresight_site/celery.py with namespace="CELERY") -------------------

REDIS_URL = os.environ.get("REDIS_URL", "").strip()

FORESIGHT_HOST_QUEUES = env_list("FORESIGHT_HOST_QUEUES", "")
FORESIGHT_CONSOLE_QUEUE = os.environ.get("FORESIGHT_CONSOLE_QUEUE", "").strip() or "console"
FORESIGHT_SYNC_INTERVAL_S = env_float("FORESIGHT_SYNC_INTERVAL_S", 1.0) or 1.0
FORESIGHT_TEST_DELIVERY_PAUSE_S = env_float("FORESIGHT_TEST_DELIVERY_PAUSE_S", 0.0)
if PRODUCTION and FORESIGHT_TEST_DELIVERY_PAUSE_S:
    raise ImproperlyConfigured("FORESIGHT_TEST_DELIVERY_PAUSE_S is for tests only: unset it in production")
for _queue in FORESIGHT_HOST_QUEUES:
    if _queue.endswith(".halt") or _queue == FORESIGHT_CONSOLE_QUEUE:
        raise ImproperlyConfigured(
            f"FORESIGHT_HOST_QUEUES: {_queue!r} is not a host queue (the console's queue, or a halt queue)")

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or None
# Without a broker, tasks run in the calling process, so a local console works alone.
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
# Acknowledge after the task ran, and requeue when a worker dies: tasks are idempotent.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A task running when the broker connection drops is cancelled and redelivered (Celery 6's
# default; idempotent tasks make that safe) instead of finishing unacknowledgeable.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# One message reserved per pool process: a halt never waits behind a prefetched backlog.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Redis hands a task nobody acknowledged within this many seconds to another worker. It must
    # outlast every countdown a worker holds unacknowledged (retries wait at most 30 s).
    "visibility_timeout": env_int("FORESIGHT_CELERY_VISIBILITY_TIMEOUT", 3600),
    # How often a worker sweeps for such tasks (throttle 1: the interval is the period).
    "unacked_restore_interval": env_int("FORESIGHT_CELERY_RESTORE_INTERVAL", 60),
    "unacked_restore_throttle": 1,
    # A broker that is down must not hang a request that enqueues on commit: fail fast, the
    # command stays pending in the database and is delivered once the broker is back.
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # the database is the record of every command, not the result backend
CELERY_RESULT_EXPIRES = 3600
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True

# Routing: a task without a queue goes to the console's worker. Deliveries are routed per
# command to Kernel.queue, halts to "<Kernel.queue>.halt" (trading/services/); the host's
# worker consumes both (-Q <queue>,<queue>.halt).
CELERY_TASK_DEFAULT_QUEUE = FORESIGHT_CONSOLE_QUEUE
CELERY_TASK_ROUTES = {
    "trading.check_stale_kernels": {"queue": FORESIGHT_CONSOLE_QUEUE},
    "trading.expire_commands": {"queue": FORESIGHT_CONSOLE_QUEUE},
}


def _beat_schedule() -> dict:
    """One sync entry per host queue (run by that host's worker, next to its kernels' files),
    one for the console's own kernels, the stale check and the expiry. A periodic task that
    waited past a few periods is dropped (``expires``): the next one does the same work."""
    every = FORESIGHT_SYNC_INTERVAL_S
    stale = max(1.0, FORESIGHT_STALE_AFTER_S / 2)
    schedule = {
        f"sync-host-{queue}": {
            "task": "trading.sync_host_kernels", "schedule": every, "args": (queue,),
            "options": {"queue": queue, "expires": max(5.0, 5 * every)},
        }
        for queue in FORESIGHT_HOST_QUEUES
    }
    schedule["sync-console-kernels"] = {
        "task": "trading.sync_host_kernels", "schedule": every, "args": ("",),
        "options": {"queue": FORESIGHT_CONSOLE_QUEUE, "expires": max(5.0, 5 * every)},
    }
    schedule["check-stale-kernels"] = {
        "task": "trading.check_stale_kernels", "schedule": stale,
        "options": {"queue": FORESIGHT_CONSOLE_QUEUE, "expires": max(5.0, 5 * stale)},
    }
    schedule["expire-commands"] = {
        "task": "trading.expire_commands", "schedule": 5.0,
        "options": {"queue": FORESIGHT_CONSOLE_QUEUE, "expires": 25.0},
    }
    return schedule


CELERY_BEAT_SCHEDULE = _beat_schedule()

# --- Logging ----------------------------------------------------------------------------

LOG_LEVEL = os.environ.get("FORESIGHT_LOG_LEVEL", "INFO").strip().upper() or "INFO"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "console": {
            "format": "%(asctime)s %(levelname)-7s %(name)s [%(process)d:%(threadName)s] %(message)s",
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "console"},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own console handler would print each request a second time.
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}
