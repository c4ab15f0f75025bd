"""Routing: which process writes a kernel's files.

A kernel with no queue is delivered to and synced by the console's processes (it runs on
this machine). A kernel with a queue belongs to its host's Celery worker: deliveries go to
Kernel.queue, halts to "<Kernel.queue>.halt", and that worker's periodic sync (host_sync)
reads its files. Without a broker (REDIS_URL empty) every task runs here, eagerly.
"""
from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from ..models import Kernel


@lru_cache(maxsize=1)
def this_host() -> str:
    return socket.gethostname()  # as `hostname` prints it; no DNS lookup in the halt's path


def on_this_host(kernel: Kernel) -> bool:
    return not kernel.host or kernel.host == this_host()


def tasks_run_here() -> bool:
    return bool(getattr(settings, "CELERY_TASK_ALWAYS_EAGER", True))


def kernel_is_local(kernel: Kernel) -> bool:
    """Does this process deliver to and sync the kernel itself? Yes for a kernel on this
    machine with no queue, or for any kernel on this machine when there is no broker; a
    kernel behind a queue is its host worker's (host_sync passes on_host=True there)."""
    return on_this_host(kernel) and (not kernel.queue or tasks_run_here())


def halt_reachable(kernel: Kernel) -> bool:
    """Can this process write the kernel's control.json itself (the halt's direct path)?"""
    return on_this_host(kernel) and Path(kernel.state_dir).is_dir()


def halt_queue(kernel: Kernel) -> str:
    """The halt's own queue on the kernel's host: never behind a backlog of deliveries."""
    return f"{kernel.queue}.halt"
