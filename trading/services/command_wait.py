"""Waiting for a command's outcome: the kernel's status synced until the row is final (or once, to read it)."""
from __future__ import annotations

import time

from ..models import ControlCommand
from .kernels import status_sync


def command_wait(*, command: ControlCommand, timeout_s: float) -> ControlCommand:
    """Sync the kernel's status until the command is final or ``timeout_s`` passed; the row, refreshed."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    kernel = command.kernel
    while True:
        status_sync(kernel=kernel)
        command.refresh_from_db()
        if command.is_final or time.monotonic() >= deadline:
            return command
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def command_refresh(*, command: ControlCommand) -> ControlCommand:
    """The command's latest fate: unless it is final already, the kernel's status is synced
    first (reading a final command writes nothing)."""
    if not command.is_final:
        status_sync(kernel=command.kernel)
        command.refresh_from_db()
    return command
