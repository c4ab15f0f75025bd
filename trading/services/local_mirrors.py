"""The mirrors of this machine's kernels, brought up to date before a page reads them (the
admin's health strip): without a sync loop (``syncstatus --loop`` or Celery beat) nothing
else refreshes them, and a healthy kernel would read as "not reporting".

Each is a status_sync_if_stale: a read while the mirror is fresh, so a page view stays
free of writes then; kernels behind a queue are their host worker's and are left alone.
"""
from __future__ import annotations

from ..models import Kernel
from .errors import ServiceError
from .kernels import status_sync_if_stale
from .routing import kernel_is_local


def local_kernels_sync_if_stale() -> list[dict]:
    """status_sync_if_stale for every kernel whose files this process reads; one summary each.
    A kernel that cannot be synced is reported (status "error"), never raised: the page still
    shows what the mirror holds."""
    summaries = []
    for kernel in Kernel.objects.order_by("name"):
        if not kernel_is_local(kernel):
            continue
        try:
            summaries.append(status_sync_if_stale(kernel=kernel))
        except ServiceError as exc:
            summaries.append({"kernel": kernel.name, "status": "error", "error": str(exc)})
    return summaries
