"""The kernel's own switches: scheduler on or off, entries paused, stopped, and the tick count.

One small object shared by the rooms that read or flip them (the command handlers flip
them, cycles and the order path read them, the status reports them); the halt has its
own state in :mod:`kernel.halt`.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RunState"]


@dataclass
class RunState:
    running: bool = True  # scheduler on
    paused: bool = False  # entries off
    stopped: bool = False  # shut down: the last status says so
    tick: int = 0

    def state_name(self, *, halted: bool) -> str:
        """The kernel's state as status.json names it."""
        if self.stopped:
            return "stopped"
        if halted:
            return "halted"
        if not self.running:
            return "stopped"
        return "paused" if self.paused else "running"
