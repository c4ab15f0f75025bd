"""Celery tasks: thin. Each takes ids, re-fetches, and calls one service (trading/services/).

Brokers redeliver (acks_late, a worker killed mid-task, a Redis visibility timeout), so every
task is idempotent: the services check the command's status before writing, and the kernel
applies each command id once. The services enqueue these tasks by name (their one
enqueuer, trading/services/task_queue.py, never imports this module) and route per call:
a delivery goes to Kernel.queue (its host's worker), a halt to "<Kernel.queue>.halt"; the
periodic tasks are sent by beat (CELERY_BEAT_SCHEDULE in settings). Without REDIS_URL they all run eagerly in
the calling process, and ``syncstatus --loop`` does the periodic work.
"""
from __future__ import annotations

import logging
import random
import time

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from kernel.control import ControlError

from . import selectors, services
from .models import ControlCommand
from .services.task_queue import (
    CHECK_STALE_KERNELS,
    DELIVER_COMMAND,
    DELIVER_HALT,
    EXPIRE_COMMANDS,
    SYNC_HOST_KERNELS,
)

log = logging.getLogger("trading.tasks")

DELIVERY_RETRIES = 5
RETRY_MAX_COUNTDOWN_S = 30.0  # keep FORESIGHT_CELERY_VISIBILITY_TIMEOUT well above this
HALT_RETRIES = 20


def _backoff(retries: int, cap: float) -> float:
    """1, 2, 4, 8... seconds, capped, with jitter so that workers retrying together spread out."""
    return min(cap, 2.0 ** retries) * random.uniform(0.75, 1.0)


def _pause_after_write():
    """Tests only (FORESIGHT_TEST_DELIVERY_PAUSE_S; refused in production): hold the delivery
    between writing control.json and recording it, the window a kill -9 must survive."""
    pause = float(getattr(settings, "FORESIGHT_TEST_DELIVERY_PAUSE_S", 0.0) or 0.0)
    if not pause:
        return None

    def sleep() -> None:
        log.warning("FORESIGHT_TEST_DELIVERY_PAUSE_S: pausing %.1f s after the write", pause)
        time.sleep(pause)

    return sleep


@shared_task(name=DELIVER_COMMAND, bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=DELIVERY_RETRIES, ignore_result=True)
def deliver_command(self, command_pk: int) -> str:
    """Append a command (and its kernel's older pending ones) to control.json on this host."""
    command = selectors.command_find(pk=command_pk)
    if command is None:
        log.warning("deliver_command: no command with pk %s", command_pk)
        return "unknown"
    command = services.command_deliver(command=command, after_write=_pause_after_write())
    if command.status != ControlCommand.Status.PENDING or self.request.is_eager:
        return command.status  # eagerly (no broker), syncstatus --loop re-delivers what failed
    if self.request.retries >= self.max_retries:
        log.error("command %s: %d delivery attempts failed (%s); the host's sync keeps trying until it "
                  "expires at %s", command.command_id, self.request.retries + 1, command.error, command.expires_at)
        return command.status
    countdown = _backoff(self.request.retries, RETRY_MAX_COUNTDOWN_S)
    if command.expires_at is not None:
        # The last try lands at the expiry, where the service expires (and audits) it.
        countdown = max(0.0, min(countdown, (command.expires_at - timezone.now()).total_seconds()))
    raise self.retry(countdown=countdown)


@shared_task(name=DELIVER_HALT, bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=HALT_RETRIES, ignore_result=True)
def deliver_halt(self, command_id: str, state_dir: str, reason: str, by: str) -> str:
    """On the "<queue>.halt" path: write the halt into control.json on this host unless the
    console already did, then sync the kernel's confirmation. Carries what a halt needs
    without the database (a halt waits for neither the database nor its own row)."""
    try:
        return services.halt_deliver(command_id=command_id, state_dir=state_dir, reason=reason, by=by)
    except (ControlError, OSError, ValueError) as exc:
        if self.request.is_eager or self.request.retries >= self.max_retries:
            log.critical("HALT %s could not be written into %s: %s (the host's sync keeps trying)",
                         command_id, state_dir, exc)
            return "failed"
        log.critical("HALT %s could not be written into %s: %s; retrying", command_id, state_dir, exc)
        raise self.retry(countdown=_backoff(self.request.retries, 5.0)) from None


@shared_task(name=SYNC_HOST_KERNELS, ignore_result=True)
def sync_host_kernels(queue: str) -> list[dict]:
    """Beat, on the host's queue: sync the kernels whose Kernel.queue is ``queue`` from their files."""
    return services.host_sync(queue=queue)


@shared_task(name=CHECK_STALE_KERNELS, ignore_result=True)
def check_stale_kernels() -> list[str]:
    """Beat, on the console's queue: audit (once per outage) and log at ERROR each silent kernel."""
    return [k.name for k in services.kernel_stale_check()]  # max age: FORESIGHT_STALE_AFTER_S


@shared_task(name=EXPIRE_COMMANDS, ignore_result=True)
def expire_commands() -> int:
    """Beat, on the console's queue: expire (and audit) commands whose host never took them."""
    return services.commands_expire_due()
