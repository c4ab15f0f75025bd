"""The log line formats of every Foresight process: text (the default) or JSON, one object a line.

JSON (python-json-logger): ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
``msg``, ``pid``, ``thread``, then every context field the record carries (``command_id``,
given as ``extra={"command_id": ...}``). A traceback is ``exc_info``. Text: the usual line, and
`` cmd=<id>`` at its end when the record names a command, so ``grep <id>`` finds it either way.

A command's id reaches the kernel's lines without every call passing it: the command stream
applies and finishes each command inside :func:`command_logging`, and the
:class:`CommandIdFilter` on the handlers stamps the records made meanwhile on that thread.

The console (foresight_site/log_format.py) uses these formatters too; its record factory
redacts a record's message and traceback as the record is made, and the JSON formatter writes
the redacted traceback (``exc_text``) rather than formatting the exception again.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from pythonjsonlogger.json import JsonFormatter

__all__ = ["LOG_FORMATS", "CommandIdFilter", "CommandTextFormatter", "JsonLineFormatter", "command_logging",
           "current_command_id", "log_format_from_env", "logging_install"]

LOG_FORMATS = ("text", "json")
LOG_FORMAT_ENV = "FORESIGHT_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_current_command: ContextVar[str | None] = ContextVar("foresight_command_id", default=None)


def log_format_from_env(environ: Any = os.environ) -> str:
    """FORESIGHT_LOG_FORMAT: ``json`` or ``text`` (the default); anything else is refused."""
    value = (environ.get(LOG_FORMAT_ENV) or "").strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV}={value!r}: use one of {', '.join(LOG_FORMATS)}")
    return value


@contextlib.contextmanager
def command_logging(command_id: str | None) -> Iterator[None]:
    """Every record made on this thread meanwhile names ``command_id`` (CommandIdFilter)."""
    token = _current_command.set(command_id)
    try:
        yield
    finally:
        _current_command.reset(token)


def current_command_id() -> str | None:
    """The command this thread logs for now: for work handed to another thread, which does not
    inherit it (a worker, a timer), to carry along into its own :func:`command_logging`."""
    return _current_command.get()


class CommandIdFilter(logging.Filter):
    """Stamps ``command_id`` on a record made inside :func:`command_logging` (an explicit
    ``extra`` wins). Lets every record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "command_id", None) is None:
            current = _current_command.get()
            if current is not None:
                record.command_id = current
        return True


class CommandTextFormatter(logging.Formatter):
    """The text line, with `` cmd=<id>`` after the message when the record names a command."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        command_id = getattr(record, "command_id", None)
        return f"{line} cmd={command_id}" if command_id else line


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record: ts, level, logger, msg, pid, thread, then the context fields."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger", "message": "msg",
                                            "process": "pid", "threadName": "thread"})
        super().__init__("%(levelname)s %(name)s %(message)s %(process)d %(threadName)s", *args, **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["ts"] = (datetime.fromtimestamp(record.created, tz=timezone.utc)
                          .isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        if record.exc_text and "exc_info" in message_dict:
            # The record factory's redacted traceback, not a fresh (unredacted) formatting of it.
            message_dict["exc_info"] = record.exc_text
        super().add_fields(log_data, record, message_dict)


def formatter_for(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    return JsonLineFormatter() if log_format == "json" else CommandTextFormatter(TEXT_FORMAT)


def logging_install(*, log_format: str, level: int = logging.INFO) -> None:
    """The kernel's logging. Handlers already on the root logger (Django's LOGGING, under
    ``manage.py runkernel``) are kept: they get the command filter, and the JSON formatter
    when ``log_format`` is json. Else one stderr handler with the chosen format."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter_for(log_format))
        root.addHandler(handler)
        root.setLevel(level)
    for handler in root.handlers:
        if not any(isinstance(f, CommandIdFilter) for f in handler.filters):
            handler.addFilter(CommandIdFilter())
        if log_format == "json" and not isinstance(handler.formatter, JsonLineFormatter):
            handler.setFormatter(JsonLineFormatter())
