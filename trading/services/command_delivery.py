"""Delivery: a kernel's pending commands appended to its control.json, in issue order, each
id once; and the re-send of a delivered command the kernel lost.

Runs where the kernel's files are: in the console for a kernel with no queue, in its
host's worker otherwise (the deliver_command task).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterable

from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from kernel import control_client
from kernel.control import KEEP, ControlError, StatusUnreadable, append_commands, read_status
from kernel.protocol import CommandStatus

from ..models import ControlCommand, Kernel
from .actors import Actor
from .audit import audit_key, audit_record
from .command_records import REDELIVER_AFTER_S, command_expire, command_fail, wire_command
from .host_kernels import TaskRefused, host_kernel_dir
from .kernel_records import status_path

log = logging.getLogger("trading.services")


def _release_too_late(command: ControlCommand, now: datetime) -> str | None:
    """A release writes halt false: sent late, it could cancel a halt written since. Why not to send it."""
    if command.issued_at <= now - timedelta(seconds=REDELIVER_AFTER_S):
        return "not delivered in time; a release is never sent late: issue it again"
    if ControlCommand.objects.filter(kernel_id=command.kernel_id, action="halt",
                                     issued_at__gt=command.issued_at).exists():
        return "a halt was requested after this release was issued: release again once the kernel reports halted"
    return None


def _delivery_batch(command: ControlCommand, now: datetime) -> list[ControlCommand]:
    """The command and every older one of its kernel still pending, in id order. A delivery
    always sends such a prefix, so control.json holds a kernel's commands in issue order
    however deliveries race (ids grow in commit order: command_issue). Expired commands are
    expired on the way, releases that would arrive late are failed."""
    rows = (ControlCommand.objects.filter(kernel_id=command.kernel_id, status=ControlCommand.Status.PENDING,
                                          pk__lte=command.pk)
            .exclude(action="halt").order_by("pk"))
    batch = []
    for row in rows:
        if row.pk == command.pk:
            row = command
        row.kernel = command.kernel
        if row.expires_at is not None and row.expires_at <= now:
            command_expire(command=row, now=now)
            continue
        if row.action == "release":
            why = _release_too_late(row, now)
            if why:
                command_fail(command=row, error=why, now=now)
                continue
        batch.append(row)
    return batch


def ledger_results(kernel: Kernel, ids: Iterable[str]) -> dict[str, CommandStatus]:
    """Results status.json no longer lists, from the kernel's own read-only reader."""
    return control_client.stored_results(Path(kernel.state_dir), list(ids))


def _kernel_done(kernel: Kernel, ids: list[str]) -> tuple[set[str], set[str]]:
    """(ids of ``ids`` the kernel already handled, every id status.json reports done — writers
    prune those from control.json)."""
    try:
        st = read_status(status_path(kernel))
    except StatusUnreadable:
        st = None
    reported = {c.id for c in st.commands} if st is not None else set()
    done = set(ids) & reported
    rest = [i for i in ids if i not in done]
    if rest:
        done |= set(ledger_results(kernel, rest))
    return done, reported


def command_deliver(*, command: ControlCommand,
                    after_write: Callable[[], None] | None = None) -> ControlCommand:
    """Append the command, with every older command of its kernel still pending, to the
    kernel's control.json, in one write, in issue order. Runs where the kernel's files are:
    in the console for a kernel with no queue, in its host's worker otherwise.

    Idempotent, because brokers redeliver: only a pending row is sent, an id the kernel already
    handled (status.json or its ledger) is not written again, and the kernel applies each id
    once. pending → delivered. A command past its time to live is expired instead (audited).
    On failure the commands stay pending with the error noted (re-delivered until they expire)
    and "command.delivery_failed" is audited once each. A release is never sent late (it
    writes halt false, which could cancel a newer halt): it fails instead.

    Never raises for the database after the write: a row left pending is re-sent, harmlessly.
    ``after_write`` runs between the write and the record (the tests' crash window)."""
    if command.status != ControlCommand.Status.PENDING:
        return command
    kernel = command.kernel
    now = timezone.now()
    if command.expires_at is not None and command.expires_at <= now:
        command_expire(command=command, now=now)
        return command
    try:
        batch = _delivery_batch(command, now)
    except DatabaseError as exc:
        log.warning("command %s: the database is unavailable (%s): sending it alone", command.command_id, exc,
                    extra={"command_id": command.command_id})
        batch = [command]
    if command.status == ControlCommand.Status.PENDING and not any(c is command for c in batch):
        try:  # another process delivered it meanwhile
            command.refresh_from_db()
        except DatabaseError:
            pass
    if not batch:
        return command
    ids = [c.command_id for c in batch]
    done, reported = _kernel_done(kernel, ids)
    to_send = [c for c in batch if c.command_id not in done]
    try:
        if to_send:
            release = any(c.action == "release" for c in to_send)
            append_commands(Path(kernel.state_dir), [wire_command(c) for c in to_send],
                            halt=False if release else KEEP, prune_ids=reported)
    except (ControlError, OSError, ValueError) as exc:
        _record_delivery_failure(batch, f"delivery to {kernel.state_dir} failed: {exc}", now)
        return command
    if after_write is not None:
        after_write()
    for c in batch:
        c.status, c.delivered_at, c.error = ControlCommand.Status.DELIVERED, now, ""
        c.delivery_attempts += 1
    try:
        with transaction.atomic():
            ControlCommand.objects.filter(pk__in=[c.pk for c in batch], status=ControlCommand.Status.PENDING).update(
                status=ControlCommand.Status.DELIVERED, delivered_at=now, error="",
                delivery_attempts=F("delivery_attempts") + 1,
            )
    except DatabaseError as exc:
        # In control.json; the rows say pending, so they are sent again later (harmless: same ids).
        log.error("commands %s delivered, but the database did not record it: %s", ", ".join(ids), exc,
                  extra={"command_id": command.command_id, "command_ids": ids})
    log.info("kernel %s: delivered %d command(s) up to %s%s", kernel.name, len(batch), command.command_id,
             f" ({len(batch) - len(to_send)} already handled by the kernel)" if len(to_send) < len(batch) else "",
             extra={"command_id": command.command_id, "command_ids": ids})
    return command


def command_deliver_on_host(*, command_pk: int,
                            after_write: Callable[[], None] | None = None) -> ControlCommand | None:
    """The delivery task, on the kernel's host: the command row ``command_pk`` delivered to its
    kernel's state dir as this host knows it (host_kernels.host_kernel_dir: one of this host's
    kernels, registered where this host runs it), with the actor the console recorded in the
    row. None when there is no such row (a task may outlive a row rolled back). Raises
    TaskRefused for anything else (nothing written)."""
    if not isinstance(command_pk, int) or isinstance(command_pk, bool):
        raise TaskRefused("a command's primary key must be an integer")
    command = ControlCommand.objects.select_related("kernel").filter(pk=command_pk).first()
    if command is None:
        log.warning("deliver_command: no command with pk %s", command_pk)
        return None
    command.kernel.state_dir = host_kernel_dir(kernel=command.kernel)
    return command_deliver(command=command, after_write=after_write)


def _record_delivery_failure(batch: list[ControlCommand], error: str, now: datetime) -> None:
    for c in batch:
        log.warning("command %s: %s", c.command_id, error, extra={"command_id": c.command_id})
        final = c.action == "release"
        c.status = ControlCommand.Status.FAILED if final else ControlCommand.Status.PENDING
        c.error = error
        c.delivery_attempts += 1
        if final:
            c.resolved_at = now
        try:
            with transaction.atomic():
                ControlCommand.objects.filter(pk=c.pk, status=ControlCommand.Status.PENDING).update(
                    status=c.status, error=error, delivery_attempts=F("delivery_attempts") + 1,
                    resolved_at=c.resolved_at,
                )
                audit_record(
                    action="command.delivery_failed", actor=Actor.system(), kernel=c.kernel,
                    slot_id=c.slot_id, command_id=c.command_id, outcome="failed" if final else "will_retry",
                    payload={"action": c.action, "error": error},
                    dedupe_key=audit_key("command.delivery_failed", c.command_id),
                )
        except DatabaseError as db_exc:
            log.error("command %s: could not record the failed delivery: %s", c.command_id, db_exc,
                      extra={"command_id": c.command_id})


def command_redeliver(*, command: ControlCommand) -> ControlCommand:
    """Re-send a delivered command the kernel never saw (e.g. a hand edit replaced control.json)."""
    kernel = command.kernel
    try:
        control_client.send(Path(kernel.state_dir), wire_command(command))
    except (ControlError, OSError, ValueError) as exc:
        log.warning("command %s: re-delivery failed: %s", command.command_id, exc, extra={"command_id": command.command_id})
        return command
    ControlCommand.objects.filter(pk=command.pk, status=ControlCommand.Status.DELIVERED).update(
        delivered_at=timezone.now(), delivery_attempts=command.delivery_attempts + 1,
    )
    log.warning("command %s re-delivered to %s: the kernel had not seen it", command.command_id, kernel.name,
                extra={"command_id": command.command_id})
    return command
