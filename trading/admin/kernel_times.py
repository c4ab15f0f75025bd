"""The kernel page's times (issue 14): to the millisecond and marked UTC, like every other
operator page (display.exact_time); the admin's default format stops at the minute in the
server's zone, and a heartbeat a minute old would read the same as one just now."""
from __future__ import annotations

from django.contrib import admin
from django.utils.dateparse import parse_datetime

from ..models import Kernel
from .display import exact_time


class KernelTimesMixin:
    @admin.display(description="created (UTC)")
    def created_time(self, obj: Kernel) -> str:
        return exact_time(obj.created_at)

    @admin.display(description="heartbeat (UTC)")
    def heartbeat_time(self, obj: Kernel) -> str:
        return exact_time(obj.heartbeat_at)

    @admin.display(description="started (UTC)")
    def started_time(self, obj: Kernel) -> str:
        """When the running process started, as its status.json says."""
        raw = (obj.status or {}).get("started_at") if isinstance(obj.status, dict) else None
        try:
            started = parse_datetime(raw) if isinstance(raw, str) else None
        except ValueError:
            started = None
        return exact_time(started) if started is not None and started.tzinfo else "—"

    @admin.display(description="halt since (UTC)")
    def halt_since_time(self, obj: Kernel) -> str:
        return exact_time(obj.halt_since)

    @admin.display(description="halt requested (UTC)")
    def halt_requested_time(self, obj: Kernel) -> str:
        return exact_time(obj.halt_requested_at)

    @admin.display(description="status synced (UTC)")
    def status_synced_time(self, obj: Kernel) -> str:
        return exact_time(obj.status_synced_at)
