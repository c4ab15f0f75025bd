"""The halt written into control.json on the kernel's host, unless the console already did.

The first half of the halt task (halts.halt_deliver confirms afterwards); the host's sync
also calls it for halts still pending (redelivery), which is why it does not sync itself.
"""
from __future__ import annotations

import logging
from pathlib import Path

from django.db import DatabaseError
from django.db.models import F
from django.utils import timezone

from kernel import control_client

from ..models import ControlCommand

log = logging.getLogger("trading.services")


def halt_write(*, command_id: str, state_dir: str, reason: str, by: str) -> tuple[ControlCommand | None, str]:
    """(the halt's row or None, "written" or "confirmed").

    Written when the halt's row is pending (the console could not reach the files) or not
    there (not committed yet, or the database is down: a halt waits for neither); left alone
    when the row is delivered (the console wrote it) or final (the kernel reported it): a late
    message never re-halts a kernel released since. Raises ControlError/OSError when
    control.json cannot be written."""
    row = None
    try:
        row = ControlCommand.objects.select_related("kernel").filter(command_id=command_id).first()
    except DatabaseError as exc:
        log.error("HALT %s: the database is unavailable (%s): writing the halt without it", command_id, exc,
                  extra={"command_id": command_id})
    outcome = "confirmed"
    if row is None or row.status == ControlCommand.Status.PENDING:
        control_client.halt(Path(state_dir), reason, by, command_id=command_id)
        outcome = "written"
        log.critical("HALT %s written into %s/control.json on this host (by %s): %s", command_id, state_dir, by, reason,
                     extra={"command_id": command_id})
        if row is not None:
            try:
                ControlCommand.objects.filter(pk=row.pk, status=ControlCommand.Status.PENDING).update(
                    status=ControlCommand.Status.DELIVERED, delivered_at=timezone.now(), error="",
                    delivery_attempts=F("delivery_attempts") + 1)
            except DatabaseError as exc:
                log.error("HALT %s is written, but the database did not record it: %s", command_id, exc,
                          extra={"command_id": command_id})
    return row, outcome
