"""Issue a command through the services, wait briefly for the kernel's answer, report its fate."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest

from .. import services
from ..models import ControlCommand, Kernel, Slot


def command_wait_s() -> float:
    """How long a button waits for the kernel's answer before saying "sent, not confirmed yet"."""
    return float(settings.FORESIGHT_ADMIN_COMMAND_WAIT_S)


def command_fate(command: ControlCommand) -> tuple[int, str]:
    """(message level, text) for a command after waiting for it."""
    status = command.status
    if status == ControlCommand.Status.APPLIED:
        return messages.SUCCESS, "applied"
    if status == ControlCommand.Status.REJECTED:
        return messages.ERROR, f"rejected: {command.error or 'the kernel gave no reason'}"
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
