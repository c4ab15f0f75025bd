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
    FORESIGHT_TRUSTED_PROXIES            comma list of the reverse proxies' addresses (IPs or CIDRs, e.g.
                                         127.0.0.1): a request from one of them is from the client its
                                         X-Forwarded-For names (audit IPs, login lockout, throttling);
                                         default none: X-Forwarded-For is ignored

Logins, API tokens and throttling (docs/operations.md, "Logins and tokens"):

    FORESIGHT_LOGIN_FAILURE_LIMIT        wrong admin passwords from one address for one username
                                         before that pair is locked out (django-axes); default 5
    FORESIGHT_LOGIN_LOCKOUT_S            how long a lockout lasts after the last failure; default 900
    FORESIGHT_AUTH_WINDOW_S              failed logins and bad tokens are counted per source in windows
                                         this long (one row each); default 300
    FORESIGHT_BAD_TOKEN_LIMIT            bad bearer tokens from one address per window before the API
                                         answers 429 to every bearer token from it; default 20
    FORESIGHT_API_RATE                   token-authenticated API calls per token owner, ninja's rate
                                         syntax (e.g. 600/m, 20/s); default 600/m
    FORESIGHT_TOKEN_DEFAULT_DAYS         lifetime of a new API token unless asked; default 30
    FORESIGHT_TOKEN_MAX_DAYS             the longest lifetime a token may be given; default 365
    DATABASE_URL                         sqlite:///relative/or/sqlite:////absolute/path, or
                                         postgres://user:pass@host:port/name (postgresql:// too);
                                         default sqlite at var/foresight.sqlite3
    REDIS_URL                            Celery broker and result backend; empty = tasks run eagerly
                                         in the calling process and `syncstatus --loop` does the
                                         periodic sync (docs/deployment.md)
    FORESIGHT_STATE_DIR                  the kernel's control.json/status.json folder; default var/kernel
    FORESIGHT_LOG_LEVEL                  default INFO; every record is redacted as it is made
                                         (foresight_site/log_redaction.py)
    FORESIGHT_LOG_FORMAT                 text (default) or json: one object a line (foresight_site/log_format.py)
    FORESIGHT_METRICS_TOKEN              /metrics to its bearer too; default: loopback clients only (docs/monitoring.md)
    FORESIGHT_STATIC_ROOT                where collectstatic puts the admin's files for the web server
                                         in front; default var/static (development: var/ is private)

The console:

    FORESIGHT_AUDIT_SPOOL                audit events written while the database is down (one
                                         fsynced JSON line each); local to each host; default
                                         var/audit-spool.jsonl. It, its folder and a SQLite database
                                         are private to the service user (0600/0700), checked at
                                         start-up (trading/checks.py)
    FORESIGHT_STRATEGIES_DIR             where slot configuration finds a strategy's Params; keep it
                                         the same as the kernel's; default <checkout>/strategies
    FORESIGHT_COMMAND_TTL_S              a command not delivered within this many seconds is
                                         expired (and audited), never sent late; default 300
    FORESIGHT_ADMIN_COMMAND_WAIT_S       how long an admin button waits for the kernel's answer
                                         before it reports "delivered"; default 3
    FORESIGHT_API_MAX_WAIT_S             the largest ?wait= an API request may ask for (a waiting
                                         request holds a web server thread; a halt never waits for
                                         one to be free longer than this); default 5
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
    FORESIGHT_HOST_KERNELS               per worker: the kernels its host runs, "name=/abs/dir,..."
                                         (as registered); a task for any other kernel is refused and
                                         audited ("task.refused"); default none: touches no kernel
    FORESIGHT_CELERY_SIGNING_KEY         message signing (Celery's "auth" serializer): this process's
    FORESIGHT_CELERY_SIGNING_CERT        RSA key and certificate (PEM), the folder of the trusted
    FORESIGHT_CELERY_TRUSTED_CERTS       senders' certificates; all three or none (docs/deployment.md)
    FORESIGHT_TEST_DELIVERY_PAUSE_S      tests only (refused in production): the delivery task sleeps
                                         this long after writing control.json, before recording it,
                                         so a test can kill -9 the worker inside that window; default 0
"""
from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from foresight_site.environment import (
    DEV_SECRET_KEY,
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    host_kernels,
    production_problems,
    proxy_ssl_header,
    sqlite_database,
)
from foresight_site.log_format import log_format_setting, logging_with_format
from foresight_site.private_files import private_file
from foresight_site.notification_settings import notification_settings

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

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

# --- Logins, API tokens, throttling -------------------------------------------------------
# Who is the client: behind the documented proxy every request comes from the proxy's address,
# so X-Forwarded-For is believed only from the proxies named here (trading/client_ip.py).
FORESIGHT_TRUSTED_PROXIES = env_list("FORESIGHT_TRUSTED_PROXIES", "")
for _proxy in FORESIGHT_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"FORESIGHT_TRUSTED_PROXIES: {_proxy!r} is not an IP address or network") from None
FORESIGHT_AUTH_WINDOW_S = env_int("FORESIGHT_AUTH_WINDOW_S", 300)
FORESIGHT_BAD_TOKEN_LIMIT = env_int("FORESIGHT_BAD_TOKEN_LIMIT", 20)
FORESIGHT_API_RATE = os.environ.get("FORESIGHT_API_RATE", "").strip() or "600/m"
FORESIGHT_TOKEN_DEFAULT_DAYS = env_int("FORESIGHT_TOKEN_DEFAULT_DAYS", 30)
FORESIGHT_TOKEN_MAX_DAYS = env_int("FORESIGHT_TOKEN_MAX_DAYS", 365)
for _name, _value in (("FORESIGHT_AUTH_WINDOW_S", FORESIGHT_AUTH_WINDOW_S),
                      ("FORESIGHT_BAD_TOKEN_LIMIT", FORESIGHT_BAD_TOKEN_LIMIT),
                      ("FORESIGHT_TOKEN_DEFAULT_DAYS", FORESIGHT_TOKEN_DEFAULT_DAYS)):
    if _value <= 0:
        raise ImproperlyConfigured(f"{_name}={_value} must be > 0")
if FORESIGHT_TOKEN_MAX_DAYS < FORESIGHT_TOKEN_DEFAULT_DAYS:
    raise ImproperlyConfigured(f"FORESIGHT_TOKEN_MAX_DAYS={FORESIGHT_TOKEN_MAX_DAYS} is shorter than "
                               f"FORESIGHT_TOKEN_DEFAULT_DAYS={FORESIGHT_TOKEN_DEFAULT_DAYS}")
if not re.fullmatch(r"[1-9][0-9]*/[0-9]*(s|sec|m|min|h|hour|d|day)", FORESIGHT_API_RATE):
    # ninja's rate syntax (ninja.throttling.SimpleRateThrottle.parse_rate), checked here so a typo
    # stops the start instead of the first API call.
    raise ImproperlyConfigured(f"FORESIGHT_API_RATE={FORESIGHT_API_RATE!r}: use <count>/<s|m|h|d>, e.g. 600/m")

# django-axes: the admin login is locked for an (address, username) pair after too many wrong
# passwords, for a while. The pair, not the username alone: a stranger who types an operator's
# name wrong 5 times must not lock the operator out of the halt button.
AUTHENTICATION_BACKENDS = [
    "trading.login_lockout.LoginLockoutBackend",  # axes, first: refuses a locked-out pair before any password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("FORESIGHT_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("FORESIGHT_LOGIN_LOCKOUT_S", 900))
AXES_LOCKOUT_PARAMETERS = [["ip_address", "username"]]
AXES_CLIENT_IP_CALLABLE = "trading.client_ip.client_ip"  # the same client address as the audit log
# An attempt while locked out neither extends the lockout nor appends to axes' row, and the
# access log (a row per successful login) stays off: the failures are counted in AuthFailure.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True
AXES_ENABLE_ACCESS_FAILURE_LOG = False
AXES_VERBOSE = False
if AXES_FAILURE_LIMIT <= 0 or AXES_COOLOFF_TIME.total_seconds() <= 0:
    raise ImproperlyConfigured("FORESIGHT_LOGIN_FAILURE_LIMIT and FORESIGHT_LOGIN_LOCKOUT_S must be > 0")

# Content security policy (django-csp): scripts and style sheets only from the console itself;
# no inline script anywhere (the dashboard's refresh is a static file). Style attributes stay
# allowed (style-src-attr): the admin and the state badges use them, and they cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

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
    "axes",
    "csp",
    "ninja",  # /api/docs from the console's own static files, not a CDN the policy would refuse
    "kernel",
    "trading",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "foresight_site.request_guards.RefuseNulCharacters",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a lockout into the 429 page.
    "axes.middleware.AxesMiddleware",
]
# /metrics (foresight_site/metrics.py, docs/monitoring.md): every response counted; served to loopback clients,
# or to anyone sending "Authorization: Bearer $FORESIGHT_METRICS_TOKEN" when that is set.
MIDDLEWARE.insert(0, "foresight_site.metrics.RequestMetrics")
FORESIGHT_METRICS_TOKEN = os.environ.get("FORESIGHT_METRICS_TOKEN", "").strip()

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
    # SQLite creates the file (0644) but not its folder; a fresh checkout has no var/ yet. Both
    # are made private here, before SQLite opens them (foresight_site/private_files.py).
    private_file(DATABASES["default"]["NAME"])

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
# Not under var/ in production: var/ is private to the service user (trading/checks.py), and the
# web server in front that serves these files runs as another user.
STATIC_ROOT = Path(os.environ.get("FORESIGHT_STATIC_ROOT", "").strip() or VAR_DIR / "static")

# --- The kernel and the console -----------------------------------------------------

FORESIGHT_STATE_DIR = Path(os.environ.get("FORESIGHT_STATE_DIR", "").strip() or VAR_DIR / "kernel")
FORESIGHT_AUDIT_SPOOL = Path(os.environ.get("FORESIGHT_AUDIT_SPOOL", "").strip() or VAR_DIR / "audit-spool.jsonl")
FORESIGHT_STRATEGIES_DIR = Path(os.environ.get("FORESIGHT_STRATEGIES_DIR", "").strip() or BASE_DIR / "strategies")
FORESIGHT_COMMAND_TTL_S = env_float("FORESIGHT_COMMAND_TTL_S", 300.0)
FORESIGHT_ADMIN_COMMAND_WAIT_S = env_float("FORESIGHT_ADMIN_COMMAND_WAIT_S", 3.0)
FORESIGHT_API_MAX_WAIT_S = env_float("FORESIGHT_API_MAX_WAIT_S", 5.0)
FORESIGHT_STALE_AFTER_S = env_float("FORESIGHT_STALE_AFTER_S", 10.0)

# --- Celery (read by foresight_site/celery.py with namespace="CELERY") -------------------

REDIS_URL = os.environ.get("REDIS_URL", "").strip()

FORESIGHT_HOST_QUEUES = env_list("FORESIGHT_HOST_QUEUES", "")
FORESIGHT_CONSOLE_QUEUE = os.environ.get("FORESIGHT_CONSOLE_QUEUE", "").strip() or "console"
FORESIGHT_SYNC_INTERVAL_S = env_float("FORESIGHT_SYNC_INTERVAL_S", 1.0) or 1.0
FORESIGHT_TEST_DELIVERY_PAUSE_S = env_float("FORESIGHT_TEST_DELIVERY_PAUSE_S", 0.0)
if PRODUCTION and FORESIGHT_TEST_DELIVERY_PAUSE_S:
    raise ImproperlyConfigured("FORESIGHT_TEST_DELIVERY_PAUSE_S is for tests only: unset it in production")


FORESIGHT_HOST_KERNELS = host_kernels(os.environ.get("FORESIGHT_HOST_KERNELS", ""))
for _queue in FORESIGHT_HOST_QUEUES:
    if _queue.endswith(".halt") or _queue == FORESIGHT_CONSOLE_QUEUE:
        raise ImproperlyConfigured(
            f"FORESIGHT_HOST_QUEUES: {_queue!r} is not a host queue (the console's queue, or a halt queue)")

# ninja's throttles count in the cache: shared by every web worker through Redis when there is
# one; without Redis each process counts for itself (a local console has one or two).
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    if REDIS_URL else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

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
# Signing: each task body signed with this process's key, only bodies signed by a trusted
# certificate accepted (foresight_site/celery.py calls app.setup_security()). A signed body can
# be replayed: the tasks still trust no argument (trading/services/host_kernels.py).
_signing = {name: os.environ.get(f"FORESIGHT_CELERY_{name}", "").strip()
            for name in ("SIGNING_KEY", "SIGNING_CERT", "TRUSTED_CERTS")}
FORESIGHT_CELERY_SIGNING = any(_signing.values())
if FORESIGHT_CELERY_SIGNING:
    if not all(_signing.values()):
        raise ImproperlyConfigured("FORESIGHT_CELERY_SIGNING_KEY, FORESIGHT_CELERY_SIGNING_CERT and "
                                   "FORESIGHT_CELERY_TRUSTED_CERTS go together: set all three or none")
    CELERY_SECURITY_KEY = _signing["SIGNING_KEY"]
    CELERY_SECURITY_CERTIFICATE = _signing["SIGNING_CERT"]
    CELERY_SECURITY_CERT_STORE = _signing["TRUSTED_CERTS"]
    CELERY_SECURITY_DIGEST = "sha256"
    CELERY_TASK_SERIALIZER = "auth"
    CELERY_ACCEPT_CONTENT = ["auth"]
    CELERY_RESULT_ACCEPT_CONTENT = ["json"]
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
# Notifications: channels, limits, EMAIL_*, the sending task's beat entry (docs/operations.md).
globals().update(notification_settings(console_queue=FORESIGHT_CONSOLE_QUEUE, beat_schedule=CELERY_BEAT_SCHEDULE,
                                       task_routes=CELERY_TASK_ROUTES))

# --- Logging ----------------------------------------------------------------------------

LOG_LEVEL = os.environ.get("FORESIGHT_LOG_LEVEL", "INFO").strip().upper() or "INFO"

# Every record is redacted as it is made (secrets, bearer tokens, URL passwords), whichever
# handler writes it, one added later too (foresight_site/log_redaction.py).
LOGGING_CONFIG = "foresight_site.log_redaction.configure_logging"
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
LOG_FORMAT = log_format_setting()  # FORESIGHT_LOG_FORMAT: text | json (foresight_site/log_format.py)
LOGGING = logging_with_format(LOGGING, log_format=LOG_FORMAT)
