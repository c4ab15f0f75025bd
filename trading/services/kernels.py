"""Kernels as the console knows them: registration and the status sync (one kernel, or
every kernel of a host).

They live together because each needs the other: registering a kernel syncs it, and a
sync flushes the audit spool, whose events may name a kernel to register.

Only where the kernel's files are is status.json read (kernel_is_local, or on_host=True
from its host's worker); elsewhere the mirror is whatever that worker last wrote.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from kernel.control import StatusUnreadable, read_status

from ..models import Kernel
from .audit_spool import spool_flush
from .command_records import commands_expire_due
from .host_kernels import TaskRefused, host_kernel_dir, task_refuse
from .kernel_records import kernel_name_for_dir, kernel_save, kernel_stale_check, resolved_dir, status_path
from .redelivery import commands_redeliver
from .routing import kernel_is_local
from .status_mirror import status_mirror_update
from .task_queue import SYNC_HOST_KERNELS

log = logging.getLogger("trading.services")


@transaction.atomic
def kernel_register(*, name: str, state_dir: str, host: str = "", queue: str = "") -> Kernel:
    """Create (or update) the console's record of a kernel; idempotent. Syncs its status
    when its status.json is readable from here."""
    kernel = kernel_save(name=name, state_dir=state_dir, host=host, queue=queue)
    if status_path(kernel).is_file():
        status_sync(kernel=kernel)
        kernel.refresh_from_db()
    return kernel


def kernel_for_state_dir(*, state_dir: str | Path) -> Kernel:
    """The kernel registered at ``state_dir``, registering it (named after the folder, or the
    folder plus a short hash when that name is taken) if the console does not know it yet."""
    resolved = resolved_dir(state_dir)
    kernel = Kernel.objects.filter(state_dir=resolved).first()
    if kernel is not None:
        return kernel
    name = kernel_name_for_dir(resolved)
    if Kernel.objects.filter(name=name).exists():
        name = f"{name[:55]}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"
    return kernel_register(name=name, state_dir=resolved)


def audit_spool_flush() -> int:
    """Write spooled audit events to the database, each once; how many were recorded
    (audit_spool.spool_flush). Never raises for a database that is still down."""
    return spool_flush(register_kernel=kernel_for_state_dir)


def status_sync_if_stale(*, kernel: Kernel, max_age_s: float = 1.0) -> dict:
    """status_sync, unless the mirror is recent (synced less than ``max_age_s`` ago) and
    status.json has not been rewritten since: a read endpoint polled by many clients must not
    turn every GET into a write, and must never answer older than the kernel's last word."""
    synced = kernel.status_synced_at
    if synced is not None and (timezone.now() - synced).total_seconds() < max_age_s:
        try:
            written = os.stat(status_path(kernel)).st_mtime
        except OSError:
            written = None
        if written is not None and written < synced.timestamp():
            return {"kernel": kernel.name, "status": "fresh", "synced_at": synced.isoformat()}
    return status_sync(kernel=kernel)


def status_sync(*, kernel: Kernel, on_host: bool | None = None) -> dict:
    """Mirror the kernel's status.json into the database and audit its outcomes, each once.

    Updates the Kernel and Slot mirrors (creating Slot rows the kernel reports), Fill rows
    and an equity sample; turns command results (from status.json, and from the kernel's
    ledger for results status.json no longer lists), reload results and halt changes into
    audit events keyed by what the kernel reported; re-delivers pending commands and expires
    stale ones; flushes the audit spool. A missing or unreadable status.json is reported in
    the summary (and in ``control_error``), never raised.

    Only where the kernel's files are: ``on_host`` defaults to :func:`kernel_is_local`; its
    host's worker passes True (host_sync). Anywhere else (a console syncing a kernel behind a
    queue) the files are not touched: only expired commands are expired, "status" is "remote",
    and the mirror is whatever the host's worker last wrote."""
    summary: dict[str, Any] = {"kernel": kernel.name, "status": "ok", "state": kernel.state, "audited": 0,
                               "commands_resolved": 0, "fills": 0, "slots_created": 0, "redelivered": 0,
                               "expired": 0, "spool_flushed": audit_spool_flush()}
    now = timezone.now()
    if not (kernel_is_local(kernel) if on_host is None else on_host):
        summary["status"] = "remote"
        summary["expired"] = commands_expire_due(kernel=kernel, now=now)
        return summary
    try:
        st = read_status(status_path(kernel))
    except StatusUnreadable as exc:
        st = None
        summary.update(status="unreadable", error=str(exc))
    if st is None and summary["status"] == "ok":
        summary["status"] = "missing"
    if st is not None:
        summary.update(status_mirror_update(kernel=kernel, st=st, now=now))
    summary["redelivered"], summary["expired"] = commands_redeliver(kernel=kernel, st=st, now=now)
    return summary


def host_sync(*, queue: str) -> list[dict]:
    """The periodic sync of one host, run by that host's worker (the sync_host_kernels task,
    one beat entry per host queue): every kernel whose Kernel.queue is ``queue`` ("" = the
    console's own machine) is synced from its files. One broken kernel does not stop the others.
    Only this host's kernels (host_kernels.host_kernel_dir): another is refused, audited once
    ("task.refused"), and its files are not touched."""
    summaries: list[dict] = [{"queue": queue, "spool_flushed": audit_spool_flush()}]
    for kernel in Kernel.objects.filter(queue=queue):
        try:
            kernel.state_dir = host_kernel_dir(kernel=kernel)
        except TaskRefused as exc:
            task_refuse(task=SYNC_HOST_KERNELS, reason=exc.message, kernel_name=kernel.name,
                        message={"queue": queue, "kernel": kernel.name, "state_dir": kernel.state_dir})
            summaries.append({"kernel": kernel.name, "status": "refused", "error": exc.message})
            continue
        try:
            summaries.append(status_sync(kernel=kernel, on_host=True))
        except DatabaseError:
            raise
        except Exception:  # noqa: BLE001 - one broken kernel must not stop the others' sync
            log.exception("status sync of kernel %s failed", kernel.name)
    return summaries


def kernels_sync(*, stale_after_s: float) -> list[dict]:
    """The console's own round (``syncstatus``, once or in a loop): the audit spool flushed,
    every kernel synced (one broken kernel does not stop the others; a database error stops
    the round), then stale heartbeats flagged (kernel_stale_check). The spool's summary first."""
    summaries: list[dict] = [{"spool_flushed": audit_spool_flush()}]
    for kernel in Kernel.objects.all():
        try:
            summaries.append(status_sync(kernel=kernel))
        except DatabaseError:
            raise
        except Exception:  # noqa: BLE001 - one broken kernel must not stop the others' sync
            log.exception("status sync of kernel %s failed", kernel.name)
    kernel_stale_check(max_age_s=stale_after_s)
    return summaries
