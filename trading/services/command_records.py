"""A command row's terminal transitions without delivery: expired (never sent late) and
failed, each audited once; and the row as the control plane's wire command."""
from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from kernel.protocol import Command

from ..models import ControlCommand, Kernel
from .actors import Actor
from .audit import audit_key, audit_record
from .timestamps import iso

log = logging.getLogger("trading.services")

COMMAND_TTL_S = 300.0  # a command not delivered within this is expired, never sent late
REDELIVER_AFTER_S = 3.0  # a delivered command the kernel has not seen after this is re-sent
MAX_DELIVERY_ATTEMPTS = 5


def command_ttl() -> float:
    return float(getattr(settings, "FORESIGHT_COMMAND_TTL_S", COMMAND_TTL_S))


def wire_command(command: ControlCommand) -> Command:
    return Command(
        id=command.command_id,
        action=command.action,
        slot=command.slot_id or None,
        args=dict(command.args or {}),
        issued_by=command.actor or None,
        issued_at=iso(command.issued_at),
    )


def command_expire(*, command: ControlCommand, now: datetime | None = None) -> bool:
    """pending → expired, audited once ("command.expired"): a command not delivered within its
    time to live is never sent late, and never dropped silently. False if it was no longer
    pending (delivered meanwhile, or expired by another process)."""
    now = now or timezone.now()
    error = command.error or "not delivered before it expired"
    with transaction.atomic():
        n = ControlCommand.objects.filter(pk=command.pk, status=ControlCommand.Status.PENDING).update(
            status=ControlCommand.Status.EXPIRED, resolved_at=now, error=error)
        if n:
            audit_record(
                action="command.expired", actor=Actor.system(), kernel=command.kernel, slot_id=command.slot_id,
                command_id=command.command_id, outcome="expired",
                payload={"action": command.action, "issued_at": iso(command.issued_at),
                         "expires_at": iso(command.expires_at), "last_error": command.error},
                dedupe_key=audit_key("command.expired", command.command_id),
            )
    if n:
        command.status, command.resolved_at, command.error = ControlCommand.Status.EXPIRED, now, error
        log.warning("command %s (%s) for kernel %s expired undelivered: %s", command.command_id,
                    command.action, command.kernel.name, error, extra={"command_id": command.command_id})
    return bool(n)


def commands_expire_due(*, kernel: Kernel | None = None, now: datetime | None = None) -> int:
    """Expire every pending command past its ``expires_at`` (of one kernel, or all): the
    console's own check, for kernels whose host does not answer. Halts never expire."""
    now = now or timezone.now()
    due = ControlCommand.objects.filter(status=ControlCommand.Status.PENDING, expires_at__lte=now)
    if kernel is not None:
        due = due.filter(kernel=kernel)
    return sum(command_expire(command=c, now=now) for c in due.select_related("kernel").order_by("pk")[:1000])


def command_fail(*, command: ControlCommand, error: str, now: datetime) -> None:
    """pending → failed, audited once ("command.delivery_failed"): never to be sent."""
    with transaction.atomic():
        n = ControlCommand.objects.filter(pk=command.pk, status=ControlCommand.Status.PENDING).update(
            status=ControlCommand.Status.FAILED, resolved_at=now, error=error)
        if n:
            audit_record(
                action="command.delivery_failed", actor=Actor.system(), kernel=command.kernel,
                slot_id=command.slot_id, command_id=command.command_id, outcome="failed",
                payload={"action": command.action, "error": error},
                dedupe_key=audit_key("command.delivery_failed", command.command_id),
            )
    if n:
        command.status, command.resolved_at, command.error = ControlCommand.Status.FAILED, now, error
        log.error("command %s (%s) for kernel %s failed, never to be sent: %s", command.command_id,
                  command.action, command.kernel.name, error, extra={"command_id": command.command_id})
