"""Secrets never reach a log, whichever handler writes it — one added after start-up too.

Django calls :func:`configure_logging` (settings.LOGGING_CONFIG) with settings.LOGGING. After
the usual ``dictConfig`` it installs a LogRecord factory that redacts each record as it is
made, before any logger, filter or handler sees it. A filter on a handler guards only that
handler, and a filter on the root logger does not see records that propagate to it from
other loggers; the record factory is the one place every record passes through.

Redacted: the values of the console's secrets (SECRET_KEY, the database password, the
password in REDIS_URL, every FORESIGHT_* environment variable whose name says KEY, SECRET,
PASSWORD or TOKEN), bearer tokens (``fst_<prefix>_<secret>`` keeps its public prefix), the
value after ``Bearer`` and the password in any ``scheme://user:password@`` URL. A traceback
is formatted and redacted when the record is made (``exc_text``; formatters use it as is).
The kernel redacts its exchange keys itself (kernel/credentials.py); this is the console's.
"""
from __future__ import annotations

import logging
import logging.config
import os
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 6  # shorter values would blank ordinary words
_SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|PASSWD|TOKEN)", re.IGNORECASE)
_PATTERNS = [
    (re.compile(r"\b(fst_[0-9a-f]{8})_[A-Za-z0-9_\-]{8,}"), r"\1_" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[^\s,;\"']+"), r"\1" + REDACTED),
    (re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+@", re.IGNORECASE), r"\1" + REDACTED + "@"),
]


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def redact_record(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logging's to report, not ours
            return
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)


def console_secrets(settings, environ=os.environ) -> list[str]:
    """The secret values the console's processes hold."""
    values = [getattr(settings, "SECRET_KEY", "")]
    for database in getattr(settings, "DATABASES", {}).values():
        values.append(str(database.get("PASSWORD") or ""))
    for url in (getattr(settings, "REDIS_URL", ""), environ.get("DATABASE_URL", "")):
        if url:
            try:
                values.append(unquote(urlsplit(url).password or ""))
            except ValueError:
                pass
    values += [value for name, value in environ.items() if name.startswith("FORESIGHT_") and _SECRET_NAME.search(name)]
    return values


_installed: Redactor | None = None


def install_record_factory(redactor: Redactor) -> None:
    """Make every LogRecord of this process redacted by ``redactor`` (once; a later call
    replaces the secrets, not the factory)."""
    global _installed
    if _installed is not None:
        _installed.secrets = redactor.secrets
        return
    previous = logging.getLogRecordFactory()

    def redacted_record(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        current = _installed
        if current is not None:
            current.redact_record(record)
        return record

    _installed = redactor
    logging.setLogRecordFactory(redacted_record)


def configure_logging(logging_settings: dict | None) -> None:
    """settings.LOGGING_CONFIG: dictConfig, then the redacting record factory."""
    from django.conf import settings

    if logging_settings:
        logging.config.dictConfig(logging_settings)
    install_record_factory(Redactor(console_secrets(settings)))
