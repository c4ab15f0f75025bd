"""The halt: engaged, delivered on the kernel's host, confirmed, released.

Halt never waits on the database: :func:`halt_engage` writes control.json first and only
then records the halt; if the database is down or locked, the audit event goes to the
spool (audit_spool), written to the database later, exactly once.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from django.db import DatabaseError, transaction
from django.utils import timezone

from kernel import control_client
from kernel.control import STATUS_FILE, ControlError, new_command_id
from kernel.protocol import Status

from ..models import ControlCommand, Kernel
from .actors import Actor, clean_ip
from .audit import audit_key, audit_record
from .audit_spool import spool_event
from .commands import command_issue
from .errors import Unavailable
from .halt_delivery import halt_write
from .host_kernels import TaskNotYet, TaskRefused, command_id_valid, host_kernel_dir, host_kernels, kernel_name_valid
from .kernels import kernel_for_state_dir, status_sync
from .permissions import permission_check
from .routing import halt_queue, halt_reachable, tasks_run_here
from .task_queue import DELIVER_HALT, task_enqueue

log = logging.getLogger("trading.services")


def halt_engage(*, kernel: Kernel, actor: Actor, reason: str) -> ControlCommand | None:
    """Halt the kernel. The halt goes out FIRST (never waits on the database), then the record.

    - The kernel's state dir is reachable from this process (a kernel on this machine):
      control.json is written directly, so the halt needs no broker either. For a kernel
      behind a queue, a task on "<queue>.halt" then only confirms it (its host's worker
      syncs the kernel's answer at once).
    - It is not (a kernel on another host): the halt is published on "<queue>.halt", the
      priority path that host's worker consumes beside its deliveries, and the row stays
      pending; Kernel.halt_requested_at (the admin's "HALT REQUESTED" banner) says the halt
      is in flight and unconfirmed until the kernel reports halted (the message names the
      halt's row and the kernel only: the worker takes the rest from the row, halt_deliver).
      Without a broker, that task runs here once the row commits. If the broker is down
      too, the row's error says so and the host's sync writes the halt once the broker is
      back; meanwhile halt it on its host with kernelctl (logged at CRITICAL).

    The record: a "halt" command row and "halt.engaged". If the database fails, the event is
    spooled and None is returned; the halt itself is already out.

    ``kernel`` may be an unsaved Kernel(name=..., state_dir=...) when the caller could not
    read the database (kernelctl at 2am)."""
    permission_check(actor, "halt")
    # A NUL cannot be stored by PostgreSQL (nor shown sensibly): spelled out, never a refused halt.
    reason = (reason or "").replace("\x00", "\\x00").strip()[:500] or f"halted by {actor.name}"
    command_id = new_command_id("halt")
    direct = not kernel.queue or halt_reachable(kernel)
    queue_error: str | None = None
    if direct:
        try:
            control_client.halt(Path(kernel.state_dir), reason, actor.name, command_id=command_id)
        except (ControlError, OSError, ValueError) as exc:
            raise Unavailable(f"could not write the halt into {kernel.state_dir}: {exc}") from None
        log.critical("HALT written into %s/control.json by %s: %s", kernel.state_dir, actor.name, reason,
                     extra={"command_id": command_id})
    elif not tasks_run_here():
        # The message carries the halt's id and the kernel's name only: the host's worker reads
        # the reason and the actor from the row below (waiting a moment for its commit).
        queue_error = task_enqueue(name=DELIVER_HALT, args=(command_id, kernel.name),
                                   queue=halt_queue(kernel), what=f"HALT {command_id} for kernel {kernel.name}")
        if queue_error:
            log.critical("HALT for kernel %s on %s NOT SENT (%s): halt it on its host: "
                         "python manage.py kernelctl --state-dir %s halt", kernel.name, kernel.host or "its host",
                         queue_error, kernel.state_dir, extra={"command_id": command_id})
        else:
            log.critical("HALT for kernel %s on %s queued on %s by %s: in flight until the kernel confirms it",
                         kernel.name, kernel.host or "its host", halt_queue(kernel), actor.name,
                         extra={"command_id": command_id})
    now = timezone.now()
    outcome = "written" if direct else ("not_queued" if queue_error else "queued")
    payload = {"reason": reason, "state_dir": kernel.state_dir,
               "path": "control.json" if direct else halt_queue(kernel)}
    if queue_error:
        payload["error"] = queue_error
    try:
        with transaction.atomic():
            row = kernel if kernel.pk else kernel_for_state_dir(state_dir=kernel.state_dir)
            command = ControlCommand.objects.create(
                command_id=command_id, kernel=row, action="halt", args={"reason": reason},
                user=actor.user, actor=actor.name[:200],
                source=actor.source if actor.source in ControlCommand.Source.values else ControlCommand.Source.SYSTEM,
                ip=clean_ip(actor.ip), issued_at=now,
                status=ControlCommand.Status.DELIVERED if direct else ControlCommand.Status.PENDING,
                delivered_at=now if direct else None, delivery_attempts=1 if direct else 0,
                error=queue_error or "",
            )
            Kernel.objects.filter(pk=row.pk, halt_engaged=False).update(halt_requested_at=now)
            audit_record(
                action="halt.engaged", actor=actor, kernel=row, command_id=command_id, outcome=outcome,
                payload=payload, dedupe_key=audit_key("halt.engaged", command_id),
            )
            if direct and row.queue and not tasks_run_here():  # eagerly it would only wait here
                transaction.on_commit(lambda: _halt_send(row, command_id, "confirmation of "))
            elif not direct and tasks_run_here():  # no broker: the task runs here once the row is in
                transaction.on_commit(lambda: _halt_send(row, command_id, ""))
        if kernel.pk:
            kernel.refresh_from_db(fields=["halt_requested_at"])
        return command
    except DatabaseError as exc:
        log.error("halt for %s is %s, but the database is unavailable (%s): spooling the audit event",
                  kernel.name, "written" if direct else outcome, exc, extra={"command_id": command_id})
        spool_event(
            action="halt.engaged", actor=actor, kernel_name=kernel.name,
            state_dir=kernel.state_dir if direct else "",
            command_id=command_id, outcome=outcome, payload={**payload, "database": "unavailable"},
            dedupe_key=audit_key("halt.engaged", command_id),
            command={"command_id": command_id, "action": "halt", "args": {"reason": reason},
                     "status": "delivered" if direct else "pending"},
        )
        if queue_error or (not direct and tasks_run_here()):
            why = "broker and database unavailable" if queue_error else "its task reads its row, and the database is unavailable"
            raise Unavailable(f"the halt for {kernel.name} was not sent ({why}): "
                              f"halt it on its host with kernelctl --state-dir {kernel.state_dir} halt") from None
        return None


def _halt_send(kernel: Kernel, command_id: str, what: str) -> None:
    task_enqueue(name=DELIVER_HALT, args=(command_id, kernel.name), queue=halt_queue(kernel),
                 what=f"{what}HALT {command_id} for kernel {kernel.name}")


HALT_ROW_WAIT_S = 1.0  # the halt's message leaves before its row commits: how long the worker looks


def _halt_row(command_id: str, wait_s: float) -> ControlCommand | None:
    deadline = time.monotonic() + wait_s
    while True:
        row = ControlCommand.objects.select_related("kernel").filter(command_id=command_id, action="halt").first()
        if row is not None or time.monotonic() >= deadline:
            return row
        time.sleep(0.05)


def halt_deliver(*, command_id: str, kernel_name: str, confirm_wait_s: float = 2.0,
                 row_wait_s: float | None = None) -> str:
    """The halt task, on the kernel's host: put the halt into control.json unless the console
    already did, then bring the kernel's confirmation into the console at once.

    Trusts nothing in the message (host_kernels): ``command_id`` must be a halt's row the
    console wrote, for ``kernel_name``, one of this host's kernels (FORESIGHT_HOST_KERNELS),
    registered at the state dir this host runs it in; the reason and the actor come from the
    row. Raises TaskRefused otherwise (nothing written), TaskNotYet while the row is not in
    the database (its message leaves before it commits; retried), DatabaseError.

    Written when the row is pending (the console could not reach the files); only confirmed
    when it is delivered (the console wrote it) or final (the kernel reported it): a late
    message never re-halts a kernel released since. Returns "written" or "confirmed"; raises
    ControlError/OSError when control.json cannot be written (retried)."""
    if not command_id_valid(command_id, "halt-"):
        raise TaskRefused("not a halt's command id")
    if not kernel_name_valid(kernel_name):
        raise TaskRefused("not a kernel name")
    allowed = host_kernels()
    if allowed and kernel_name not in allowed:
        raise TaskRefused(f"kernel {kernel_name!r} is not one of this host's kernels (FORESIGHT_HOST_KERNELS)")
    row = _halt_row(command_id, HALT_ROW_WAIT_S if row_wait_s is None else row_wait_s)
    if row is None:
        raise TaskNotYet(f"no halt {command_id} in the database")
    if row.kernel.name != kernel_name:
        raise TaskRefused(f"halt {command_id} is for kernel {row.kernel.name!r}, not {kernel_name!r}")
    state_dir = host_kernel_dir(kernel=row.kernel)
    row.kernel.state_dir = state_dir
    reason = (row.args or {}).get("reason") or f"halted by {row.actor}"
    _, outcome = halt_write(command_id=command_id, state_dir=state_dir, reason=reason, by=row.actor)
    if (Path(state_dir) / STATUS_FILE).is_file():  # a kernel that never ran has nothing to confirm
        control_client.wait_state(Path(state_dir), {"halted"}, confirm_wait_s)
    try:
        status_sync(kernel=row.kernel, on_host=True)
    except DatabaseError as exc:
        log.error("HALT %s: could not sync the kernel's answer: %s", command_id, exc, extra={"command_id": command_id})
    return outcome


def halt_wait(*, state_dir: str | Path, timeout_s: float, kernel: Kernel | None = None) -> Status | None:
    """Wait until the kernel reports halted, reading its status.json alone (the database may be
    down: a halt waits for nothing); what it reported, or None after ``timeout_s``. With
    ``kernel`` (its row), the confirmation is then synced into the console at once; a database
    error there is ignored: the halt is what matters, and syncstatus records the rest."""
    st = control_client.wait_state(Path(state_dir), {"halted"}, timeout_s)
    if st is not None and kernel is not None:
        try:
            status_sync(kernel=kernel)
        except DatabaseError:
            pass
    return st


def halt_release(*, kernel: Kernel, actor: Actor, reason: str = "") -> ControlCommand:
    """Release a latched halt: one write of ``halt: false`` + ``release``. Conflict unless the
    kernel's last status says halted. The kernel stays paused until someone resumes it.
    ``reason`` travels in the command's args, so the "command.issued" audit event carries it."""
    permission_check(actor, "release")
    status_sync(kernel=kernel)
    kernel.refresh_from_db()
    reason = (reason or "").strip()[:500]
    return command_issue(kernel=kernel, action="release", actor=actor, args={"reason": reason} if reason else None)
