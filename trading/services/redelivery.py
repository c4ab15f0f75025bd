"""What the console still owes a kernel, settled where its files are: expire what outlived
its time to live, send what is still pending, write pending halts, re-send what it lost."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Q

from kernel.control import ControlError
from kernel.protocol import Status

from ..models import ControlCommand, Kernel
from .command_delivery import command_deliver, command_redeliver
from .command_records import MAX_DELIVERY_ATTEMPTS, REDELIVER_AFTER_S, command_fail, commands_expire_due
from .halt_delivery import halt_write
from .timestamps import parse_dt

log = logging.getLogger("trading.services")


def commands_redeliver(*, kernel: Kernel, st: Status | None, now: datetime) -> tuple[int, int]:
    """(re-sent, expired). Expire what outlived its time to live; send, in issue order, what
    is still pending (a failed delivery, a task lost with the broker, a process that died
    after its commit: the database, not the broker, is the record of what is owed); write
    pending halts; re-send what the kernel lost (a hand edit replaced control.json)."""
    expired = commands_expire_due(kernel=kernel, now=now)
    redelivered = 0
    pending = ControlCommand.objects.filter(kernel=kernel, status=ControlCommand.Status.PENDING).exclude(action="halt")
    due = pending.filter(Q(delivery_attempts__gt=0) | ~Q(error="")
                         | Q(issued_at__lte=now - timedelta(seconds=REDELIVER_AFTER_S)))
    last = due.select_related("kernel").order_by("-pk").first()
    if last is not None:
        # One delivery of the newest sends every older pending command with it, in order.
        redelivered = pending.filter(pk__lte=last.pk).count()
        command_deliver(command=last)
    redelivered += _halts_redeliver(kernel, now)
    if st is None:
        return redelivered, expired
    heartbeat = parse_dt(st.heartbeat_at)
    seen = {c.id for c in st.commands} | set(st.pending_commands)
    if heartbeat is None:
        return redelivered, expired
    lost = ControlCommand.objects.filter(
        kernel=kernel, status=ControlCommand.Status.DELIVERED,
        delivered_at__lt=heartbeat - timedelta(seconds=REDELIVER_AFTER_S),
        delivery_attempts__lt=MAX_DELIVERY_ATTEMPTS,
    ).exclude(action__in=("halt", "release")).select_related("kernel")
    for command in lost:
        if command.command_id not in seen:
            command_redeliver(command=command)
            redelivered += 1
    return redelivered, expired


def _halts_redeliver(kernel: Kernel, now: datetime) -> int:
    """Write the halts still pending (queued while the broker was down, or lost with it)."""
    written = 0
    for halt in ControlCommand.objects.filter(kernel=kernel, status=ControlCommand.Status.PENDING,
                                              action="halt").select_related("kernel").order_by("pk"):
        if ControlCommand.objects.filter(kernel=kernel, action="release", status=ControlCommand.Status.APPLIED,
                                         issued_at__gt=halt.issued_at).exists():
            command_fail(command=halt, error="not sent: the kernel was halted and released after it was issued",
                         now=now)
            continue
        try:
            halt_write(command_id=halt.command_id, state_dir=kernel.state_dir, by=halt.actor,
                       reason=(halt.args or {}).get("reason") or f"halted by {halt.actor}")
            written += 1
        except (ControlError, OSError, ValueError) as exc:
            log.critical("HALT %s for kernel %s could not be written into %s: %s", halt.command_id, kernel.name,
                         kernel.state_dir, exc)
    return written
