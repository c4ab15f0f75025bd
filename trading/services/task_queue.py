"""The one place that enqueues Celery tasks: by task name, so that the services never
import trading/tasks.py (the tasks import the services).

The names are the tasks' registered names (``@shared_task(name=...)`` in trading/tasks.py,
CELERY_TASK_ROUTES and the beat schedule in settings). A registered task is applied as
itself (eagerly in this process without a broker: TradingConfig.ready imports the tasks);
an unregistered name is sent to the broker as is.
"""
from __future__ import annotations

import logging

from celery import current_app

from .routing import tasks_run_here

log = logging.getLogger("trading.services")

DELIVER_COMMAND = "trading.deliver_command"
DELIVER_HALT = "trading.deliver_halt"
SYNC_HOST_KERNELS = "trading.sync_host_kernels"
CHECK_STALE_KERNELS = "trading.check_stale_kernels"
EXPIRE_COMMANDS = "trading.expire_commands"
SEND_NOTIFICATIONS = "trading.send_notifications"


def task_enqueue(*, name: str, args: tuple, queue: str, what: str) -> str | None:
    """Publish a task; None when sent, else why not. Runs after a commit (or before the
    database for a halt), so it must never raise into the request: a row left pending is
    delivered once the broker is back (the host's sync re-delivers pending commands)."""
    try:
        current_app.signature(name, args=args, queue=queue).apply_async()
    except Exception as exc:  # noqa: BLE001 - kombu/redis raise many types; the row keeps the truth
        if tasks_run_here():  # no broker: the task itself ran here, and failed
            log.exception("%s: the task failed in this process", what)
            return f"the task failed in this process ({type(exc).__name__}: {exc})"
        error = f"not queued on {queue}: the broker is unavailable ({type(exc).__name__}: {exc})"
        log.error("%s %s", what, error)
        return error
    return None
