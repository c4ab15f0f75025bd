"""Exchange API keys: where they may come from, and how they never leak.

Sources, first match wins:

1. environment variables ``FORESIGHT_<EXCHANGE>_API_KEY``, ``FORESIGHT_<EXCHANGE>_SECRET``
   and (exchanges that need a passphrase, e.g. OKX) ``FORESIGHT_<EXCHANGE>_PASSWORD``;
2. a JSON secrets file outside the repository, readable by its owner only::

       {"binance": {"apiKey": "...", "secret": "..."},
        "okx": {"apiKey": "...", "secret": "...", "password": "..."}}

   A file that others may read (any group or world permission bit), or that lives
   inside the repository, is refused: keys in a checkout end up in commits and backups.

Keys never go to the database, status.json, the audit log or a log line: a
:class:`Credentials` prints as ``Credentials(binance, key …a1b2)`` at most, and
:class:`RedactSecrets` is a logging filter that blanks any of its values in a record.
"""
from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import OperationalError

__all__ = ["Credentials", "RedactSecrets", "load_credentials", "env_prefix", "REPO_ROOT", "REDACTED"]

REPO_ROOT = Path(__file__).resolve().parent.parent
REDACTED = "[redacted]"

_FIELDS = {"apiKey": "API_KEY", "secret": "SECRET", "password": "PASSWORD"}


def env_prefix(exchange_id: str) -> str:
    """``"binance"`` -> ``"FORESIGHT_BINANCE_"``."""
    return "FORESIGHT_" + "".join(ch if ch.isalnum() else "_" for ch in exchange_id.upper()) + "_"


@dataclass(frozen=True)
class Credentials:
    """API credentials of one exchange account. Never printed, pickled into logs or stored."""

    exchange_id: str
    source: str  # "environment" or the secrets file's path: safe to show
    api_key: str = field(repr=False)
    secret: str = field(repr=False)
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Credentials({self.exchange_id}, key …{self.api_key[-4:] if len(self.api_key) >= 12 else '****'}, from {self.source})"

    __str__ = __repr__

    def ccxt_config(self) -> dict[str, str]:
        config = {"apiKey": self.api_key, "secret": self.secret}
        if self.password:
            config["password"] = self.password
        return config

    def secret_values(self) -> list[str]:
        return [v for v in (self.api_key, self.secret, self.password) if v]

    def describe(self) -> dict[str, Any]:
        """What status.json may say about the keys: where they came from, nothing of them."""
        return {"source": self.source, "password": self.password is not None}


def load_credentials(
    exchange_id: str,
    *,
    secrets_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    repo_root: Path = REPO_ROOT,
) -> Credentials | None:
    """The keys for ``exchange_id``, or None if neither source has them (public data only).
    Raises OperationalError for a secrets file that is unsafe, unreadable or malformed,
    or for half a key pair."""
    env = os.environ if environ is None else environ
    prefix = env_prefix(exchange_id)
    key, secret, password = (env.get(prefix + suffix) or None for suffix in _FIELDS.values())
    if key or secret:
        if not (key and secret):
            raise OperationalError(
                f"{prefix}API_KEY and {prefix}SECRET must both be set (only one of them is)"
            )
        return Credentials(exchange_id, "environment", key, secret, password)
    if secrets_file is None:
        return None
    return _from_file(exchange_id, Path(secrets_file), repo_root)


def _from_file(exchange_id: str, path: Path, repo_root: Path) -> Credentials | None:
    try:
        real = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise OperationalError(f"secrets file {path} does not exist") from None
    root = repo_root.resolve()
    if real == root or root in real.parents:
        raise OperationalError(
            f"secrets file {path} is inside the repository ({root}): keep keys outside the checkout"
        )
    st = real.stat()
    if not stat.S_ISREG(st.st_mode):
        raise OperationalError(f"secrets file {path} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise OperationalError(
            f"secrets file {path} is readable or writable by others (mode {stat.S_IMODE(st.st_mode):o}): "
            f"chmod 600 it"
        )
    try:
        data = json.loads(real.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise OperationalError(f"cannot read secrets file {path}: {type(exc).__name__}") from None
    except json.JSONDecodeError as exc:
        # The message of a JSONDecodeError quotes no content, only a position.
        raise OperationalError(f"secrets file {path} is not JSON (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise OperationalError(f"secrets file {path} must hold a JSON object")
    entry = data.get(exchange_id)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise OperationalError(f"secrets file {path}: {exchange_id!r} must be an object with apiKey and secret")
    values = {name: entry.get(name) for name in _FIELDS}
    for name, value in values.items():
        if value is not None and not isinstance(value, str):
            raise OperationalError(f"secrets file {path}: {exchange_id}.{name} must be a string")
    if not values["apiKey"] or not values["secret"]:
        raise OperationalError(f"secrets file {path}: {exchange_id} needs both apiKey and secret")
    return Credentials(exchange_id, str(path), values["apiKey"], values["secret"], values["password"] or None)


class RedactSecrets(logging.Filter):
    """Blanks the given secret values in a log record's message and arguments.

    Attach it to a logger (records created there) or to a handler (every record it
    writes). Values shorter than 6 characters are not redacted (they would blank
    ordinary words)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is not ours to fix here
            return True
        clean = self.redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback text is formatted later from exc_info: pre-format it, redacted.
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True
