"""Issuing commands: permission and shape checked, the row and "command.issued" recorded,
and the command sent on its way once the transaction that recorded it commits; also the
shapes a caller asks for besides one command on a known kernel: one per slot with a shared
wait (the admin's bulk actions), a kernel named by its state dir (kernelctl), or no
database at all (kernelctl at 2am)."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.db import DatabaseError, transaction
from django.utils import timezone
from pydantic import ValidationError

from kernel import control_client
from kernel.control import ControlError
from kernel.errors import BadCommand
from kernel.protocol import SLOT_ACTIONS, Command, SlotConfig

from ..models import ControlCommand, Kernel, Slot
from .actors import Actor, clean_ip
from .audit import audit_key, audit_record, jsonable
from .audit_spool import spool_event
from .command_delivery import command_deliver
from .command_records import command_ttl
from .command_wait import command_wait
from .errors import Conflict, NotAllowed, NotFound, ServiceError, Unavailable, invalid_config_error
from .kernel_records import resolved_dir
from .kernels import kernel_for_state_dir, status_sync
from .permissions import permission_check
from .routing import tasks_run_here
from .task_queue import DELIVER_COMMAND, task_enqueue
from .timestamps import iso

log = logging.getLogger("trading.services")


def command_dispatch(*, command: ControlCommand) -> ControlCommand:
    """Send an issued command on its way, once the transaction that recorded it committed:
    delivered in this process for a kernel with no queue, else a delivery task on the kernel's
    queue (run by its host's worker; eagerly here without a broker). Never raises: a command
    that could not be sent stays pending, with the reason in ``error``."""
    kernel = command.kernel
    if not kernel.queue:
        return command_deliver(command=command)
    error = task_enqueue(name=DELIVER_COMMAND, args=(command.pk,), queue=kernel.queue,
                         what=f"command {command.command_id} for kernel {kernel.name}")
    try:
        if error:
            ControlCommand.objects.filter(pk=command.pk, status=ControlCommand.Status.PENDING).update(error=error)
            command.error = error
        elif tasks_run_here():
            command.refresh_from_db()
    except DatabaseError as exc:
        log.error("command %s: could not record its dispatch: %s", command.command_id, exc,
                  extra={"command_id": command.command_id})
    return command


def _check_releasable(kernel: Kernel) -> None:
    if kernel.halt_engaged:
        return
    if kernel.halt_requested_at is not None:
        raise Conflict(
            f"kernel {kernel.name}: a halt was written at {iso(kernel.halt_requested_at)} and the kernel "
            "has not confirmed it yet; wait until it reports halted, then release"
        )
    raise Conflict(f"kernel {kernel.name} is not halted (its last status says {kernel.state})")


@transaction.atomic
def command_issue(
    *,
    kernel: Kernel,
    action: str,
    actor: Actor,
    slot_id: str | None = None,
    args: dict | None = None,
) -> ControlCommand:
    """Issue a command: check permission and shape, record it (row + "command.issued"), and
    deliver it into control.json once the transaction commits."""
    if action == "halt":
        raise ServiceError("a halt is not a command: use halt_engage")
    permission_check(actor, action)
    # Issuers of one kernel take turns (PostgreSQL; SQLite serialises writers anyway), so that
    # its commands' ids grow in commit order: delivery sends them in id order (command_deliver).
    list(Kernel.objects.select_for_update().filter(pk=kernel.pk).values_list("pk", flat=True))
    if action in SLOT_ACTIONS:
        if not slot_id:
            raise ServiceError(f"{action} needs a slot")
        exists = Slot.objects.filter(kernel=kernel, slot_id=slot_id).exists()
        if action == "slot.add":
            if exists:
                raise Conflict(f"slot {slot_id!r} already exists on {kernel.name}; use slot.configure")
            try:
                SlotConfig.model_validate({**(args or {}), "id": slot_id})
            except ValidationError as exc:
                raise invalid_config_error(exc) from None
        elif not exists:
            raise NotFound(f"kernel {kernel.name} has no slot {slot_id!r}")
    elif slot_id:
        raise ServiceError(f"{action} is a kernel action and takes no slot")
    if action == "release":
        _check_releasable(kernel)
    if action in ("resume", "slot.resume") and (kernel.halt_engaged or kernel.halt_requested_at):
        raise Conflict(f"kernel {kernel.name} is halted: release the halt first, then {action}")
    try:
        wire = control_client.build_command(action, slot_id or None, args or {}, issued_by=actor.name)
    except BadCommand as exc:
        raise ServiceError(str(exc)) from None
    now = timezone.now()
    command = ControlCommand.objects.create(
        command_id=wire.id,
        kernel=kernel,
        action=action,
        slot_id=slot_id or "",
        args=jsonable(wire.args),
        user=actor.user,
        actor=actor.name[:200],
        source=actor.source if actor.source in ControlCommand.Source.values else ControlCommand.Source.SYSTEM,
        ip=clean_ip(actor.ip),
        issued_at=now,
        expires_at=now + timedelta(seconds=command_ttl()),
    )
    audit_record(
        action="command.issued", actor=actor, kernel=kernel, slot_id=slot_id or "",
        command_id=command.command_id, outcome="issued",
        payload={"action": action, "args": command.args},
    )
    log.info("command %s issued: %s%s for kernel %s by %s", command.command_id, action,
             f" {slot_id}" if slot_id else "", kernel.name, actor.name, extra={"command_id": command.command_id})
    transaction.on_commit(lambda: command_dispatch(command=command))
    return command


@dataclass(frozen=True)
class CommandsIssued:
    """What :func:`commands_issue_many` did, each list in the slots' order."""

    issued: list[tuple[Slot, ControlCommand]]  # each row as the kernel last answered it
    refused: list[tuple[Slot, ServiceError]]  # nothing was written for these


def commands_issue_many(*, slots: Iterable[Slot], action: str, actor: Actor, timeout_s: float) -> CommandsIssued:
    """One ``action`` command per slot, then their outcomes, all within one wait of
    ``timeout_s`` (so that ten slots do not take ten waits). A slot refused does not stop the
    others. Not atomic as a whole on purpose: each command commits, and goes out, on its own,
    before the wait that needs the kernel to have seen them."""
    issued: list[tuple[Slot, ControlCommand]] = []
    refused: list[tuple[Slot, ServiceError]] = []
    for slot in slots:
        try:
            issued.append((slot, command_issue(kernel=slot.kernel, action=action, actor=actor,
                                               slot_id=slot.slot_id)))
        except ServiceError as exc:
            refused.append((slot, exc))
    deadline = time.monotonic() + timeout_s
    waited = [(slot, command_wait(command=command, timeout_s=max(deadline - time.monotonic(), 0.0)))
              for slot, command in issued]
    return CommandsIssued(issued=waited, refused=refused)


def command_issue_for_state_dir(
    *,
    state_dir: str | Path,
    action: str,
    actor: Actor,
    slot_id: str | None = None,
    args: dict | None = None,
) -> ControlCommand:
    """A command for the kernel at ``state_dir`` (registered now if the console does not know
    it), checked against its latest word: its status is synced first. Not atomic: the sync
    commits on its own. A database that is down raises DatabaseError, for the caller to fall
    back on :func:`command_issue_offline`."""
    kernel = kernel_for_state_dir(state_dir=state_dir)
    status_sync(kernel=kernel)
    return command_issue(kernel=kernel, action=action, actor=actor, slot_id=slot_id, args=args)


def command_issue_offline(
    *,
    state_dir: str | Path,
    kernel_name: str,
    action: str,
    actor: Actor,
    slot_id: str | None = None,
    args: dict | None = None,
) -> Command:
    """For the CLI when the database is unavailable: write the command straight into
    control.json and spool its audit event (the row and the event appear once the database
    is back and audit_spool_flush runs). Trusted callers only: no permission check."""
    if actor.user is not None or actor.source not in ("cli", "system"):
        raise NotAllowed("only the CLI may issue commands without the database")
    try:
        wire = control_client.build_command(action, slot_id or None, args or {}, issued_by=actor.name)
        control_client.send(Path(state_dir), wire)
    except BadCommand as exc:
        raise ServiceError(str(exc)) from None
    except (ControlError, OSError) as exc:
        raise Unavailable(f"could not write control.json in {state_dir}: {exc}") from None
    log.warning("command %s written into %s/control.json by %s without the database: %s%s", wire.id, state_dir,
                actor.name, action, f" {slot_id}" if slot_id else "", extra={"command_id": wire.id})
    spool_event(
        action="command.issued", actor=actor, kernel_name=kernel_name, state_dir=resolved_dir(state_dir),
        slot_id=slot_id or "", command_id=wire.id, outcome="issued",
        payload={"action": action, "args": wire.args, "database": "unavailable"},
        dedupe_key=audit_key("command.issued", wire.id),
        command={"command_id": wire.id, "action": action, "slot_id": slot_id or "", "args": wire.args},
    )
    return wire
