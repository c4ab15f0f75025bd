"""The audit log, read-only: one row per operator action with its outcome joined
(trading/audit_actions.py), filters on each column, and its CSV export (the filtered
changelist, or selected rows). ``?events=all`` shows every append-only event as recorded."""
from __future__ import annotations

import csv
import json
from datetime import timezone as dt_timezone
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from ..audit_actions import ACTION_ROW_FIELDS, action_row, audit_action_rows, audit_actions, format_duration
from ..models import AuditEvent
from .audit_filters import ACTION_FILTERS, EventsFilter, every_event
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


def audit_csv_response(queryset, filename: str, *, actions: bool = False) -> StreamingHttpResponse:
    """Every event as recorded, or (``actions``) one row per operator action."""
    writer = csv.writer(_Echo())

    def rows():
        if actions:
            yield writer.writerow(ACTION_ROW_FIELDS)
            for row in audit_action_rows(queryset):
                yield writer.writerow([csv_cell(getattr(row, f)) for f in ACTION_ROW_FIELDS])
            return
        yield writer.writerow(AUDIT_CSV_FIELDS)
        for event in queryset.iterator(chunk_size=2000):
            yield writer.writerow([csv_cell(getattr(event, f)) for f in AUDIT_CSV_FIELDS])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at_seconds", "act_display", "kernel_name", "slot_id", "strategy_display", "actor_display",
                    "outcome_joined", "duration_display", "reason_display")
    event_list_display = ("at_display", "actor", "source", "action", "kernel_name", "slot_id", "command_id",
                          "outcome_display", "payload_short")
    event_list_filter = (EventsFilter, "action", "outcome", "source", "kernel_name", "slot_id", "actor")
    search_fields = ("actor", "action", "kernel_name", "slot_id", "command_id", "outcome")
    date_hierarchy = "at"
    actions = ("export_csv",)
    readonly_fields = ("at", "actor", "user_id", "source", "ip", "action", "kernel_name", "slot_id",
                       "command_id", "outcome", "payload_pretty", "dedupe_key")
    fields = readonly_fields
    list_per_page = 100

    def get_queryset(self, request):
        return audit_actions(every_event=True)  # EventsFilter narrows it to operator actions unless ?events=all

    def get_list_display(self, request):
        return self.event_list_display if every_event(request) else self.list_display

    def get_list_filter(self, request):
        return self.event_list_filter if every_event(request) else (EventsFilter, *ACTION_FILTERS)

    def get_list_display_links(self, request, list_display):
        return (list_display[0],)

    @admin.display(description="time (UTC)", ordering="at")
    def at_seconds(self, obj: AuditEvent):
        return obj.at.astimezone(dt_timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="action", ordering="act")
    def act_display(self, obj: AuditEvent):
        return obj.act or obj.action

    @admin.display(description="strategy (version)", ordering="strategy_name")
    def strategy_display(self, obj: AuditEvent):
        if not obj.strategy_name:
            return "—"
        version = action_row(obj).version
        return f"{obj.strategy_name} v{version}" if version else obj.strategy_name

    @admin.display(description="actor", ordering="actor")
    def actor_display(self, obj: AuditEvent):
        if obj.token_name:
            return format_html("{} <small>token {}</small>", obj.actor, obj.token_name)
        return obj.actor

    @admin.display(description="outcome", ordering="outcome_now")
    def outcome_joined(self, obj: AuditEvent):
        return state_badge(obj.outcome_now) if obj.outcome_now else "—"

    @admin.display(description="took")
    def duration_display(self, obj: AuditEvent):
        return format_duration(action_row(obj).duration_s) or "—"

    @admin.display(description="reason / result")
    def reason_display(self, obj: AuditEvent):
        text = action_row(obj).reason
        return text if len(text) <= 120 else text[:119] + "…"

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

    @admin.action(description="Export selected rows as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        return audit_csv_response(queryset.order_by("-at", "-id"), self.csv_filename(),
                                  actions=not every_event(request))

    def export_view(self, request: HttpRequest):
        """The current changelist (its filters, search and date drill-down) as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(reverse("admin:trading_auditevent_changelist") + "?e=1")
        return audit_csv_response(changelist.queryset, self.csv_filename(), actions=not every_event(request))

    @staticmethod
    def csv_filename() -> str:
        return f"audit-{timezone.now():%Y%m%dT%H%M%SZ}.csv"
