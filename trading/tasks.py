"""Celery tasks: thin. Each takes ids, re-fetches, and calls one service (trading/services/).

Brokers redeliver (acks_late, a worker killed mid-task, a Redis visibility timeout), so every
task is idempotent: the services check the command's status before writing, and the kernel
applies each command id once. The services enqueue these tasks by name (their one
enqueuer, trading/services/task_queue.py, never imports this module) and route per call:
a delivery goes to Kernel.queue (its host's worker), a halt to "<Kernel.queue>.halt"; the
periodic tasks are sent by beat (CELERY_BEAT_SCHEDULE in settings). Without REDIS_URL they all run eagerly in
the calling process, and ``syncstatus --loop`` does the periodic work.

A message is not trusted (anyone who can publish to Redis can write one): a task carries a
command's id or a kernel's name only, never a path or an actor, and takes exactly its
declared arguments. The services resolve the rest on this host (services/host_kernels.py:
the row the console wrote, the state dir of this host's FORESIGHT_HOST_KERNELS); a message
they refuse is audited ("task.refused"), never retried, and nothing is written.
"""
from __future__ import annotations

import logging
import random
import time

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from django.db import DatabaseError

from kernel.control import ControlError

from . import services
from .models import ControlCommand
from .services.task_queue import (
    CHECK_STALE_KERNELS,
    DELIVER_COMMAND,
    DELIVER_HALT,
    EXPIRE_COMMANDS,
    SEND_NOTIFICATIONS,
    SYNC_HOST_KERNELS,
)
from .services.notifications import notifications_run

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
def deliver_command(self, command_pk: int, *extra, **forged) -> str:
    """Append a command (and its kernel's older pending ones) to control.json on this host."""
    try:
        services.task_args_check(extra=extra, forged=forged)
        command = services.command_deliver_on_host(command_pk=command_pk, after_write=_pause_after_write())
    except services.TaskRefused as exc:
        return services.task_refuse(task=DELIVER_COMMAND, reason=exc.message,
                                    message={"command_pk": command_pk, "args": extra, "kwargs": forged})
    if command is None:
        return "unknown"
    if command.status != ControlCommand.Status.PENDING or self.request.is_eager:
        return command.status  # eagerly (no broker), syncstatus --loop re-delivers what failed
    if self.request.retries >= self.max_retries:
        log.error("command %s: %d delivery attempts failed (%s); the host's sync keeps trying until it "
                  "expires at %s", command.command_id, self.request.retries + 1, command.error, command.expires_at,
                  extra={"command_id": command.command_id})
        return command.status
    countdown = _backoff(self.request.retries, RETRY_MAX_COUNTDOWN_S)
    if command.expires_at is not None:
        # The last try lands at the expiry, where the service expires (and audits) it.
        countdown = max(0.0, min(countdown, (command.expires_at - timezone.now()).total_seconds()))
    raise self.retry(countdown=countdown)


@shared_task(name=DELIVER_HALT, bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=HALT_RETRIES, ignore_result=True)
def deliver_halt(self, command_id: str, kernel_name: str, *extra, **forged) -> str:
    """On the "<queue>.halt" path: write the halt (its row's reason and actor) into this host's
    control.json of the kernel unless the console already did, then sync the kernel's answer."""
    message = {"command_id": command_id, "kernel_name": kernel_name, "args": extra, "kwargs": forged}
    last_try = self.request.is_eager or self.request.retries >= self.max_retries
    try:
        services.task_args_check(extra=extra, forged=forged)
        return services.halt_deliver(command_id=command_id, kernel_name=kernel_name)
    except services.TaskNotYet as exc:
        if last_try:
            return services.task_refuse(task=DELIVER_HALT, reason=exc.message, message=message,
                                        kernel_name=kernel_name, command_id=command_id)
        error: Exception = exc
    except services.TaskRefused as exc:
        return services.task_refuse(task=DELIVER_HALT, reason=exc.message, message=message,
                                    kernel_name=kernel_name, command_id=command_id)
    except (ControlError, OSError, ValueError, DatabaseError) as exc:
        if last_try:
            log.critical("HALT %s for kernel %s could not be written: %s (the host's sync keeps trying)",
                         command_id, kernel_name, exc, extra={"command_id": command_id})
            return "failed"
        error = exc
    log.critical("HALT %s for kernel %s could not be written yet: %s; retrying", command_id, kernel_name, error,
                 extra={"command_id": command_id})
    raise self.retry(countdown=_backoff(self.request.retries, 5.0))


@shared_task(name=SYNC_HOST_KERNELS, ignore_result=True)
def sync_host_kernels(queue: str, *extra, **forged) -> list[dict] | str:
    """Beat, on the host's queue: sync this host's kernels whose Kernel.queue is ``queue`` from their files."""
    try:
        services.task_args_check(extra=extra, forged=forged)
        if not isinstance(queue, str):
            raise services.TaskRefused("a queue's name must be a string")
    except services.TaskRefused as exc:
        return services.task_refuse(task=SYNC_HOST_KERNELS, reason=exc.message,
                                    message={"queue": queue, "args": extra, "kwargs": forged})
    return services.host_sync(queue=queue)


@shared_task(name=CHECK_STALE_KERNELS, ignore_result=True)
def check_stale_kernels() -> list[str]:
    """Beat, on the console's queue: audit (once per outage) and log at ERROR each silent kernel."""
    return [k.name for k in services.kernel_stale_check()]  # max age: FORESIGHT_STALE_AFTER_S


@shared_task(name=EXPIRE_COMMANDS, ignore_result=True)
def expire_commands() -> int:
    """Beat, on the console's queue: expire (and audit) commands whose host never took them."""
    return services.commands_expire_due()


@shared_task(name=SEND_NOTIFICATIONS, ignore_result=True)
def send_notifications() -> dict:
    """Beat (and each sync round), on the console's queue: tell new events, retry what is due."""
    return notifications_run()
