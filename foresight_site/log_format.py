"""The console's log line format: FORESIGHT_LOG_FORMAT=text (the default) or json.

The web server (settings.LOGGING, and gunicorn's own lines: foresight_site/gunicorn.conf.py)
and the Celery workers (foresight_site/celery.py) write the same lines as the kernel
(kernel/log_setup.py): in JSON one object a line with ``ts``, ``level``, ``logger``, ``msg``,
``pid``, ``thread`` and the record's context fields (``command_id``); in text ``cmd=<id>``
ends a line about a command. Redaction (foresight_site/log_redaction.py) happens as each
record is made, so it holds for either format.
"""
from __future__ import annotations

import copy
import logging
import os
from typing import Any

from kernel.log_setup import CommandIdFilter, JsonLineFormatter, log_format_from_env

__all__ = ["gunicorn_logs_format", "log_format_setting", "logging_with_format", "worker_handlers_format"]

_TEXT = "kernel.log_setup.CommandTextFormatter"
_JSON = "kernel.log_setup.JsonLineFormatter"


def log_format_setting(environ: Any = os.environ) -> str:
    """FORESIGHT_LOG_FORMAT, refused at start-up when it is neither text nor json."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        return log_format_from_env(environ)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def logging_with_format(logging_settings: dict, *, log_format: str) -> dict:
    """settings.LOGGING with each formatter in ``log_format`` (a text formatter keeps its
    format string and gains ``cmd=<id>``), and the command filter on each handler."""
    out = copy.deepcopy(logging_settings)
    for name, formatter in out.get("formatters", {}).items():
        if log_format == "json":
            out["formatters"][name] = {"()": _JSON}
        else:
            out["formatters"][name] = {"()": _TEXT, **{k: v for k, v in formatter.items() if k != "()"}}
    out.setdefault("filters", {})["command_id"] = {"()": "kernel.log_setup.CommandIdFilter"}
    for handler in out.get("handlers", {}).values():
        handler["filters"] = [*handler.get("filters", []), "command_id"]
    return out


def gunicorn_logs_format(*, gunicorn_log: Any, log_format: str) -> None:
    """gunicorn's own lines (start-up, workers, errors; its access log when turned on) in
    ``log_format``: gunicorn.conf.py's logger class calls it once gunicorn set its handlers up."""
    if log_format != "json":
        return
    for logger in (gunicorn_log.error_log, gunicorn_log.access_log):
        for handler in logger.handlers:
            handler.setFormatter(JsonLineFormatter())


def worker_handlers_format(*, logger: logging.Logger, log_format: str) -> None:
    """A Celery worker's handlers (celery's after_setup_logger / after_setup_task_logger): the
    command filter, and in json the JSON formatter, so a task's lines read like the web
    server's. In text celery keeps its own (coloured) format; the messages name the command."""
    for handler in logger.handlers:
        if not any(isinstance(f, CommandIdFilter) for f in handler.filters):
            handler.addFilter(CommandIdFilter())
        if log_format == "json" and not isinstance(handler.formatter, JsonLineFormatter):
            handler.setFormatter(JsonLineFormatter())
