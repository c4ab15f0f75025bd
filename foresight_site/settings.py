"""Foresight settings: one module, configured by environment variables (12-factor).

Every variable has a safe local default (SQLite under var/, no Redis, debug on), so a
fresh checkout runs as is. With FORESIGHT_ENV=production the module refuses to load
while the secret key is missing or still the development default.

    FORESIGHT_ENV                        "development" (default) or "production"
    FORESIGHT_SECRET_KEY                 required in production
    FORESIGHT_DEBUG                      true/false; default true, false in production
    FORESIGHT_ALLOWED_HOSTS              comma list; default localhost,127.0.0.1,[::1],testserver
    FORESIGHT_CSRF_TRUSTED_ORIGINS       comma list, e.g. https://console.example.com; default none
    FORESIGHT_SECURE_COOKIES             session/CSRF cookies over HTTPS only; default true in production
    DATABASE_URL                         sqlite:///relative/or/sqlite:////absolute/path, or
                                         postgres://user:pass@host:port/name (postgresql:// too);
                                         default sqlite at var/foresight.sqlite3
    REDIS_URL                            Celery broker and result backend; empty = tasks run eagerly
    FORESIGHT_STATE_DIR                  the kernel's control.json/status.json folder; default var/kernel
    FORESIGHT_CELERY_VISIBILITY_TIMEOUT  seconds before Redis redelivers an unacked task; default 3600
    FORESIGHT_LOG_LEVEL                  default INFO
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


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


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
if PRODUCTION and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "FORESIGHT_ENV=production needs FORESIGHT_SECRET_KEY set to a secret value "
        "(it is missing or still the development default)"
    )

DEBUG = env_bool("FORESIGHT_DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env_list("FORESIGHT_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("FORESIGHT_CSRF_TRUSTED_ORIGINS", "")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("FORESIGHT_SECURE_COOKIES", default=PRODUCTION)

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

# --- The kernel -------------------------------------------------------------------------

FORESIGHT_STATE_DIR = Path(os.environ.get("FORESIGHT_STATE_DIR", "").strip() or VAR_DIR / "kernel")

# --- Celery (read by foresight_site/celery.py with namespace="CELERY") -------------------

REDIS_URL = os.environ.get("REDIS_URL", "").strip()

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or None
# Without a broker, tasks run in the calling process, so a local console works alone.
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
# Acknowledge after the task ran, and requeue when a worker dies: tasks are idempotent.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Redis redelivers a task not acknowledged within this many seconds.
    "visibility_timeout": env_int("FORESIGHT_CELERY_VISIBILITY_TIMEOUT", 3600),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True

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
