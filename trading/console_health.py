"""The fleet's health as the operator needs it at a glance (issue 14): reads only, of the
mirrors the status sync keeps (``Kernel``, ``Slot``, the audit log), never a write.

One definition of "stale" (heartbeat older than FORESIGHT_STALE_AFTER_S), shared by the
admin's health strip, the API's ``stale`` flag and ``/api/health/kernels``.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from .models import AuditEvent, Kernel
from .release_status import running_release

# What each problem says, for a human; the codes are the API's.
PROBLEMS = {
    "halted": "halted",
    "stale": "not reporting",
    "faulted": "faulted slots",
    "control_error": "control file error",
}


def kernel_stale(kernel: Kernel, now: datetime | None = None) -> bool:
    """No heartbeat, or one older than FORESIGHT_STALE_AFTER_S. A kernel that stopped
    cleanly (its last status says "stopped") is not stale, halted or not: it said goodbye
    (kernel.stopped; a halt still in force is shown as halted)."""
    if kernel.state == "stopped":
        return False
    if kernel.heartbeat_at is None:
        return True
    age = (now or timezone.now()) - kernel.heartbeat_at
    return age > timedelta(seconds=settings.FORESIGHT_STALE_AFTER_S)


def _halted_by(kernel: Kernel) -> str:
    """Who engaged the halt in force: the actor of the last "halt.engaged" with no
    "halt.cleared" after it; otherwise the kernel itself (a risk limit, a file)."""
    events = AuditEvent.objects.filter(kernel_name=kernel.name, action__in=("halt.engaged", "halt.cleared"))
    last = events.order_by("-at", "-id").first()
    if last is not None and last.action == "halt.engaged":
        return last.actor or "unknown"
    return "the kernel"


def _releases(kernel: Kernel) -> tuple[list[str], list[dict[str, Any]]]:
    """(strategies whose working tree differs from what runs, canaries/shadows running)."""
    strategies = (kernel.status or {}).get("strategies") or {}
    drift, deploys = [], []
    for name in sorted(strategies):
        entry = strategies[name] if isinstance(strategies[name], dict) else {}
        tree = entry.get("working_tree")
        if isinstance(tree, dict) and tree.get("differs"):
            drift.append(name)
        running = running_release(kernel, name)
        if running is not None:
            kind, info = running
            deploys.append({"strategy": name, "kind": kind, "version": info.get("version")})
    return drift, deploys


def kernel_health(kernel: Kernel, *, faulted: int, now: datetime) -> dict[str, Any]:
    """One kernel's health. ``condition``: halted, not reporting, stopped, or its state.
    ``problems``: codes of what needs a human (the API's 503)."""
    stale = kernel_stale(kernel, now)
    halted = kernel.halt_engaged or kernel.state == "halted"
    problems = []
    if halted:
        problems.append("halted")
    if stale:
        problems.append("stale")
    if faulted:
        problems.append("faulted")
    if kernel.control_error:
        problems.append("control_error")
    if halted:
        condition = "halted"
    elif stale:
        condition = "not reporting"
    elif kernel.state == "stopped":
        condition = "stopped"
    else:
        condition = kernel.state or "unknown"
    drift, deploys = _releases(kernel)
    age = (now - kernel.heartbeat_at) if kernel.heartbeat_at else None
    return {
        "kernel": kernel,
        "name": kernel.name,
        "state": kernel.state or "unknown",
        "condition": condition,
        "stale": stale,
        "halt": {
            "engaged": halted,
            "since": kernel.halt_since,
            "by": _halted_by(kernel) if halted else "",
            "reason": kernel.halt_reason,
        } if halted else None,
        "halt_requested_at": kernel.halt_requested_at,
        "control_error": kernel.control_error,
        "heartbeat_at": kernel.heartbeat_at,
        "heartbeat_age_s": None if age is None else max(age.total_seconds(), 0.0),
        "faulted_slots": faulted,
        "drift": drift,
        "deploys": deploys,
        "problems": problems,
        "needs_human": bool(problems),
    }


def console_health() -> dict[str, Any]:
    """Every kernel's health, and whether anything needs a human (``red``). Two queries,
    plus one per halted kernel (who halted it)."""
    now = timezone.now()
    kernels = Kernel.objects.annotate(
        faulted_count=Count("slots", filter=~Q(slots__fault=""))).order_by("name")
    rows = [kernel_health(k, faulted=k.faulted_count, now=now) for k in kernels]
    return {
        "kernels": rows,
        "red": any(r["needs_human"] for r in rows),
        "warn": any(r["drift"] or r["halt_requested_at"] for r in rows),
        "at": now,
    }
