"""The audit log, read-only, and its CSV export (the filtered changelist, or selected events)."""
from __future__ import annotations

import csv
import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from ..models import AuditEvent
from .display import exact_time, state_badge
from .read_only import ReadOnlyAdmin

AUDIT_CSV_FIELDS = ("at", "actor", "user_id", "source", "ip", "action", "kernel_name", "slot_id",
                    "command_id", "outcome", "payload")


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    # A spreadsheet would run a cell starting like a formula; a halt reason is free text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    """A file whose write hands the line back, so csv.writer can feed a streaming response."""

    def write(self, value):
        return value


def audit_csv_response(queryset, filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(AUDIT_CSV_FIELDS)
        for event in queryset.iterator(chunk_size=2000):
            yield writer.writerow([csv_cell(getattr(event, f)) for f in AUDIT_CSV_FIELDS])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at_display", "actor", "source", "action", "kernel_name", "slot_id", "command_id",
                    "outcome_display", "payload_short")
    list_filter = ("action", "outcome", "source", "kernel_name", "slot_id", "actor")
    search_fields = ("actor", "action", "kernel_name", "slot_id", "command_id", "outcome")
    date_hierarchy = "at"
    actions = ("export_csv",)
    readonly_fields = ("at", "actor", "user_id", "source", "ip", "action", "kernel_name", "slot_id",
                       "command_id", "outcome", "payload_pretty", "dedupe_key")
    fields = readonly_fields

    @admin.display(description="at", ordering="at")
    def at_display(self, obj: AuditEvent):
        return exact_time(obj.at)

    @admin.display(description="outcome", ordering="outcome")
    def outcome_display(self, obj: AuditEvent):
        return state_badge(obj.outcome) if obj.outcome else "—"

    @admin.display(description="payload")
    def payload_short(self, obj: AuditEvent):
        text = json.dumps(obj.payload, sort_keys=True) if obj.payload else ""
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description="payload")
    def payload_pretty(self, obj: AuditEvent):
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", json.dumps(obj.payload, indent=2))

    def get_urls(self):
        return [
            path("export.csv", self.admin_site.admin_view(self.export_view), name="trading_auditevent_export"),
            *super().get_urls(),
        ]

    @admin.action(description="Export selected events as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        return audit_csv_response(queryset.order_by("-at", "-id"), self.csv_filename())

    def export_view(self, request: HttpRequest):
        """The current changelist (its filters, search and date drill-down) as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(reverse("admin:trading_auditevent_changelist") + "?e=1")
        return audit_csv_response(changelist.queryset, self.csv_filename())

    @staticmethod
    def csv_filename() -> str:
        return f"audit-{timezone.now():%Y%m%dT%H%M%SZ}.csv"
