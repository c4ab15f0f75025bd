"""Reading the environment for foresight_site/settings.py: typed variables, DATABASE_URL, and
what production refuses. Its own module so that settings.py stays a list of settings, and so
that tests can call these functions without importing the settings.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

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


def host_kernels(raw: str) -> dict[str, str]:
    """FORESIGHT_HOST_KERNELS="demo=/srv/foresight/var/kernel,k2=/srv/k2" → {name: state dir}."""
    kernels: dict[str, str] = {}
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        name, sep, path = (x.strip() for x in item.partition("="))
        slug = name.replace("-", "").replace("_", "")
        if not sep or not (name.isascii() and slug.isalnum() and len(name) <= 64) or not os.path.isabs(path):
            raise ImproperlyConfigured(
                f"FORESIGHT_HOST_KERNELS: {item!r}: use name=/absolute/state/dir, comma separated")
        if name in kernels:
            raise ImproperlyConfigured(f"FORESIGHT_HOST_KERNELS names kernel {name!r} twice")
        kernels[name] = os.path.normpath(path)
    return kernels
