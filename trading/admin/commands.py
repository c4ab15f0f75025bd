"""The control commands, read-only: what was asked of which kernel, by whom, and its fate."""
from __future__ import annotations

from django.contrib import admin

from ..models import ControlCommand
from .display import exact_time, state_badge
from .read_only import ReadOnlyAdmin


@admin.register(ControlCommand)
class ControlCommandAdmin(ReadOnlyAdmin):
    list_display = ("command_id", "issued_display", "kernel", "action", "slot_id", "status_display", "actor",
                    "source", "error_short", "resolved_display")
    list_filter = ("status", "action", "kernel", "source")
    search_fields = ("command_id", "actor", "slot_id")
    date_hierarchy = "issued_at"
    list_select_related = ("kernel",)

    @admin.display(description="issued", ordering="issued_at")
    def issued_display(self, obj: ControlCommand):
        return exact_time(obj.issued_at)

    @admin.display(description="resolved", ordering="resolved_at")
    def resolved_display(self, obj: ControlCommand):
        return exact_time(obj.resolved_at)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: ControlCommand):
        return state_badge(obj.status)

    @admin.display(description="error")
    def error_short(self, obj: ControlCommand):
        return obj.error[:100] or "—"
