"""Issue a command through the services, wait briefly for the kernel's answer, report its fate."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest
from django.utils import timezone

from .. import services
from ..console_health import kernel_health
from ..services.command_feedback import command_feedback
from ..services.command_records import command_ttl
from ..models import ControlCommand, Kernel, Slot
from .display import exact_time, format_age, heartbeat_age, heartbeat_stale

# What the operator reads on a button, where the message's short label would mislead: start
# and stop switch the scheduler, not the process.
BUTTON_TEXT = {"start": "Start scheduler", "stop": "Stop scheduler"}


def kernel_button_shown(action: str, kernel: Kernel) -> bool:
    """Does this kernel button make sense in the kernel's last reported state? A button that
    would only be refused, or do nothing, is not shown (its URL still answers)."""
    state = "halted" if kernel.halt_engaged else (kernel.state or "unknown")
    if action == "start":
        return state not in ("running", "paused")
    if action == "stop":
        return state != "stopped"
    if action == "pause":
        return state not in ("paused", "halted")
    if action == "resume":
        return state == "paused"
    return True


def slot_button_shown(action: str, slot: Slot) -> bool:
    if action == "slot.pause":
        return slot.state != "paused"
    if action == "slot.resume":
        return slot.state != "active" or bool(slot.fault)
    return True


def halt_display(kernel: Kernel) -> dict | None:
    """While halted: since when (UTC, to the second and beyond) and by whom, for the
    "HALTED since ... by ..." that replaces the HALT button; None otherwise."""
    if not kernel.halt_engaged:
        return None
    halt = kernel_health(kernel, faulted=0, now=timezone.now())["halt"] or {}
    return {"since": exact_time(kernel.halt_since) if kernel.halt_since else "(unknown)",
            "by": halt.get("by") or "unknown", "reason": kernel.halt_reason}


def kernel_silent(kernel: Kernel) -> bool:
    """Not reporting: no heartbeat within FORESIGHT_STALE_AFTER_S, whether it hangs, crashed or
    stopped cleanly. A command to it waits in control.json for its return."""
    return heartbeat_stale(kernel)


def silent_consequence(kernel: Kernel, what: str) -> str:
    ttl_min = command_ttl() / 60
    return (f"Kernel {kernel.name} is not reporting (last heartbeat {format_age(heartbeat_age(kernel))}"
            f"{', at ' + exact_time(kernel.heartbeat_at) if kernel.heartbeat_at else ''}). "
            f"{what} is written to its control file and applies only when the kernel returns; "
            f"it expires if the kernel is not back within {ttl_min:g} min.")


def command_wait_s() -> float:
    """How long a button waits for the kernel's answer before saying "sent, not confirmed yet"."""
    return float(settings.FORESIGHT_ADMIN_COMMAND_WAIT_S)


def command_fate(command: ControlCommand) -> tuple[int, str]:
    """(message level, text) for a command after waiting for it."""
    status = command.status
    if status in (ControlCommand.Status.APPLIED, ControlCommand.Status.REJECTED):
        # With what the kernel reported: a reload's versions, a flatten's price and P&L, the reason.
        return (messages.SUCCESS if status == ControlCommand.Status.APPLIED else messages.ERROR,
                command_feedback(command=command))
    if status == ControlCommand.Status.FAILED:
        return messages.ERROR, f"failed: {command.error or 'delivery failed'} (command id {command.command_id})"
    if status == ControlCommand.Status.EXPIRED:
        return messages.ERROR, f"expired before the kernel applied it (command id {command.command_id})"
    return messages.WARNING, f"sent, not confirmed yet (command id {command.command_id})"


class CommandButtonsMixin:
    """For a ModelAdmin whose buttons issue commands: one service call, a wait, a message."""

    def report_command(self, request: HttpRequest, command: ControlCommand, what: str) -> None:
        level, text = command_fate(command)
        self.message_user(request, f"{what}: {text}", level)

    def run_issued(self, request: HttpRequest, *, what: str,
                   issue: Callable[[], ControlCommand]) -> ControlCommand | None:
        """``issue()`` is the one service call; a refusal becomes an error message (None)."""
        try:
            command = issue()
        except services.ServiceError as exc:
            self.message_user(request, f"{what}: {exc}", messages.ERROR)
            return None
        command = services.command_wait(command=command, timeout_s=command_wait_s())
        self.report_command(request, command, what)
        return command

    def run_command(self, request: HttpRequest, *, kernel: Kernel, action: str, what: str,
                    slot_id: str | None = None, args: dict | None = None) -> ControlCommand | None:
        actor = services.Actor.from_request(request, "admin")
        return self.run_issued(request, what=what, issue=lambda: services.command_issue(
            kernel=kernel, action=action, actor=actor, slot_id=slot_id, args=args))

    def run_bulk(self, request: HttpRequest, slots: Iterable[Slot], action: str, label: str) -> None:
        """One service call (a command per slot, one shared wait), then a message per slot not
        applied and one for all those applied."""
        done = services.commands_issue_many(slots=slots, action=action,
                                            actor=services.Actor.from_request(request, "admin"),
                                            timeout_s=command_wait_s())
        for slot, exc in done.refused:
            self.message_user(request, f"{label} on {slot}: {exc}", messages.ERROR)
        applied: list[str] = []
        for slot, command in done.issued:
            level, text = command_fate(command)
            if level == messages.SUCCESS:
                applied.append(str(slot))
            else:
                self.message_user(request, f"{label} on {slot}: {text}", level)
        if applied:
            self.message_user(request, f"{label}: applied on {len(applied)} slot(s): {', '.join(applied)}",
                              messages.SUCCESS)
