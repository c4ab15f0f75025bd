"""How the admin shows times, states and heartbeats: presentation only, no queries."""
from __future__ import annotations

from datetime import timedelta, timezone as dt_timezone

from django.conf import settings
from django.utils import timezone
from django.utils.html import format_html

from ..models import Kernel

STATE_COLOURS = {
    "running": "#1a7f37", "active": "#1a7f37", "applied": "#1a7f37",
    "paused": "#9a6700", "starting": "#9a6700", "pending": "#9a6700", "delivered": "#9a6700",
    "stopped": "#57606a", "disabled": "#57606a", "unknown": "#57606a", "expired": "#57606a",
    "halted": "#c62828", "rejected": "#c62828", "failed": "#c62828",
}


def heartbeat_age(kernel: Kernel) -> timedelta | None:
    return timezone.now() - kernel.heartbeat_at if kernel.heartbeat_at else None


def heartbeat_stale(kernel: Kernel) -> bool:
    # The same limit as the stale-kernel check, so the page and the alert agree.
    age = heartbeat_age(kernel)
    return age is None or age > timedelta(seconds=settings.FORESIGHT_STALE_AFTER_S)


def format_age(age: timedelta | None) -> str:
    if age is None:
        return "never"
    s = int(max(age.total_seconds(), 0))
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def exact_time(value) -> str:
    """Audit times to the millisecond, in UTC: the admin's default format stops at the minute."""
    if value is None:
        return "—"
    return value.astimezone(dt_timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def state_badge(state: str) -> str:
    return format_html(
        '<span class="fs-badge" style="background:{}">{}</span>', STATE_COLOURS.get(state or "unknown", "#57606a"),
        state or "unknown",
    )
