"""What the operator reads after a command: its fate in one line, with the substance the
kernel reported (a reload's old → new version and sha256, a flatten's fill price and the
round trip's realised P&L, a rejection's reason). Used by the admin's messages, the API's
answers and kernelctl, so that all three say the same."""
from __future__ import annotations

from typing import Any

__all__ = ["command_answer", "command_feedback", "result_feedback"]


def result_feedback(*, status: str, error: str | None, detail: Any) -> str:
    """One line for a result: ``applied: <the kernel's message>``, ``rejected: <its reason>``,
    or the status alone while there is nothing more to say."""
    message = detail.get("message") if isinstance(detail, dict) else None
    if status == "applied":
        note = message or (detail.get("note") if isinstance(detail, dict) else None)
        return f"applied: {note}" if note else "applied"
    if status == "rejected":
        reason = error or "the kernel gave no reason"
        return f"rejected: {reason}" + (f" ({message})" if message and message not in reason else "")
    if error:
        return f"{status}: {error}"
    return status


def command_feedback(*, command) -> str:
    """:func:`result_feedback` of a ControlCommand row."""
    return result_feedback(status=command.status, error=command.error, detail=command.detail)


def command_answer(*, command, audit: str = "recorded") -> dict[str, Any]:
    """The API's 202 body for a command (trading.schemas.CommandAcceptedOut)."""
    return {
        "command_id": command.command_id, "kernel": command.kernel.name, "action": command.action,
        "slot_id": command.slot_id, "status": command.status, "error": command.error,
        "detail": command.detail if isinstance(command.detail, dict) else None,
        "message": command_feedback(command=command), "audit": audit,
    }
