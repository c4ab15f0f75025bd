"""The operators' console in the Django admin.

Every button is a POST view added through ``get_urls()``: it translates the request into one
call of ``trading/services.py``, waits a moment for the kernel's answer, reports it with
``message_user`` and redirects. No business logic lives here.
"""
from __future__ import annotations

import csv
import json
import time
from datetime import timedelta, timezone as dt_timezone
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme

from . import selectors, services
from .models import ApiToken, AuditEvent, ControlCommand, Kernel, Slot

# How long a button waits for the kernel's answer before saying "sent, not confirmed yet"
# (settings.FORESIGHT_ADMIN_COMMAND_WAIT_S overrides it).
COMMAND_WAIT_S = 3.0
# A heartbeat older than this means the kernel is down or stuck.
HEARTBEAT_STALE_AFTER = timedelta(seconds=10)
DASHBOARD_WINDOWS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "all": timedelta(days=36525),  # a century: the selector wants a timedelta
}
DASHBOARD_DEFAULT_WINDOW = "24h"
DASHBOARD_REFRESH_S = 5

# Kernel-wide buttons: action -> (label, what it does, in the operator's words).
KERNEL_BUTTONS = {
    "start": ("Start", "turns the scheduler on"),
    "stop": ("Stop", "turns the scheduler off; the process keeps reading commands"),
    "pause": ("Pause", "no new entries on any slot; exits keep running"),
    "resume": ("Resume", "entries allowed again"),
    "reload": ("Reload strategies", "loads, checks and swaps in new strategy versions"),
    "rollback": ("Rollback", "goes back to a strategy's previous version"),
}
SLOT_BUTTONS = {
    "slot.pause": ("Pause", "this slot takes no new entries"),
    "slot.resume": ("Resume", "this slot trades again; a fault on it is cleared"),
    "slot.flatten": ("Flatten", "sells the whole position at market and pauses the slot"),
}
MIRROR_FIELDS = (
    "state", "fault", "strategy_version", "strategy_sha256", "position_qty", "entry_price",
    "last_price", "realized_pnl", "unrealized_pnl", "last_cycle_at", "next_cycle_at",
    "cycles", "missed_cycles", "running_config",
)


admin.site.site_header = "Foresight console"
admin.site.site_title = "Foresight"
admin.site.index_title = "Kernels, slots and the audit log"

# --------------------------------------------------------------------- shared helpers


def command_wait_s() -> float:
    return float(getattr(settings, "FORESIGHT_ADMIN_COMMAND_WAIT_S", COMMAND_WAIT_S))


def can(request: HttpRequest, action: str) -> bool:
    return request.user.has_perm(services.required_permission(action))


def require(request: HttpRequest, action: str) -> None:
    if not can(request, action):
        raise PermissionDenied(f"you may not {action}")


def safe_next(request: HttpRequest, default: str) -> str:
    nxt = request.POST.get("next") or request.GET.get("next") or ""
    if nxt and url_has_allowed_host_and_scheme(
        nxt, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return nxt
    return default


def heartbeat_age(kernel: Kernel) -> timedelta | None:
    return timezone.now() - kernel.heartbeat_at if kernel.heartbeat_at else None


def heartbeat_stale(kernel: Kernel) -> bool:
    age = heartbeat_age(kernel)
    return age is None or age > HEARTBEAT_STALE_AFTER


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


def kernel_strategies(kernel: Kernel) -> list[str]:
    """Strategies the kernel reports loaded, and those its slots are configured with."""
    names = set((kernel.status or {}).get("strategies", {}) or {})
    names.update(kernel.slots.values_list("strategy", flat=True))
    return sorted(names)


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
    """Issue one command through the services, wait briefly, report its fate."""

    def report_command(self, request: HttpRequest, command: ControlCommand, what: str) -> None:
        level, text = command_fate(command)
        self.message_user(request, f"{what}: {text}", level)

    def run_command(self, request: HttpRequest, *, kernel: Kernel, action: str, what: str,
                    slot_id: str | None = None, args: dict | None = None) -> ControlCommand | None:
        actor = services.Actor.from_request(request, "admin")
        try:
            command = services.command_issue(kernel=kernel, action=action, actor=actor,
                                             slot_id=slot_id, args=args)
        except services.ServiceError as exc:
            self.message_user(request, f"{what}: {exc}", messages.ERROR)
            return None
        command = services.command_wait(command=command, timeout_s=command_wait_s())
        self.report_command(request, command, what)
        return command

    def run_bulk(self, request: HttpRequest, slots, action: str, label: str) -> None:
        """One command per slot; all of them share one wait budget."""
        actor = services.Actor.from_request(request, "admin")
        issued: list[tuple[Slot, ControlCommand]] = []
        for slot in slots:
            try:
                issued.append((slot, services.command_issue(
                    kernel=slot.kernel, action=action, actor=actor, slot_id=slot.slot_id)))
            except services.ServiceError as exc:
                self.message_user(request, f"{label} on {slot}: {exc}", messages.ERROR)
        deadline = time.monotonic() + command_wait_s()
        applied: list[str] = []
        for slot, command in issued:
            command = services.command_wait(command=command, timeout_s=max(deadline - time.monotonic(), 0.0))
            level, text = command_fate(command)
            if level == messages.SUCCESS:
                applied.append(str(slot))
            else:
                self.message_user(request, f"{label} on {slot}: {text}", level)
        if applied:
            self.message_user(request, f"{label}: applied on {len(applied)} slot(s): {', '.join(applied)}",
                              messages.SUCCESS)


class Refused(Exception):
    """A service refused what a change form asked for. Raised out of save_model so that the
    admin's transaction rolls back; the form is then shown again with the reasons on it."""

    def __init__(self, error: "services.ServiceError") -> None:
        super().__init__(str(error))
        self.error = error


class RefusedFormMixin:
    refused: "services.ServiceError | None" = None

    def clean(self):
        cleaned = super().clean()
        placed = False
        for key, msg in self.refused.errors.items():
            field = key.split(".", 1)[0]  # "params.fast" belongs to params
            if field in self.fields:
                self.add_error(field, msg if key == field else f"{key}: {msg}")
                placed = True
        if not placed:
            self.add_error(None, str(self.refused))
        return cleaned


class ServiceSaveMixin:
    """Change forms whose save_model calls a service: a refusal (:class:`Refused`) becomes
    form errors, and the command a save issued is waited for once the transaction commits."""

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        refused = getattr(request, "admin_refused", None)
        if refused is not None:
            form = type(form.__name__, (RefusedFormMixin, form), {"refused": refused})
        return form

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            response = super().changeform_view(request, object_id, form_url, extra_context)
        except Refused as refused:
            request.admin_refused = refused.error
            response = super().changeform_view(request, object_id, form_url, extra_context)
        command = getattr(request, "admin_command", None)
        if command is not None:
            # Committed and delivered only now: wait for the kernel's answer.
            command = services.command_wait(command=command, timeout_s=command_wait_s())
            self.report_command(request, command, getattr(request, "admin_command_label", str(command)))
        return response


def exact_time(value) -> str:
    """Audit times to the millisecond, in UTC: the admin's default format stops at the minute."""
    if value is None:
        return "—"
    return value.astimezone(dt_timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def state_badge(state: str) -> str:
    colours = {
        "running": "#1a7f37", "active": "#1a7f37", "applied": "#1a7f37",
        "paused": "#9a6700", "starting": "#9a6700", "pending": "#9a6700", "delivered": "#9a6700",
        "stopped": "#57606a", "disabled": "#57606a", "unknown": "#57606a", "expired": "#57606a",
        "halted": "#c62828", "rejected": "#c62828", "failed": "#c62828",
    }
    return format_html(
        '<span class="fs-badge" style="background:{}">{}</span>', colours.get(state or "unknown", "#57606a"),
        state or "unknown",
    )


# --------------------------------------------------------------------- kernels


@admin.register(Kernel)
class KernelAdmin(ServiceSaveMixin, CommandButtonsMixin, admin.ModelAdmin):
    list_display = ("name", "state_display", "heartbeat_display", "halt_display", "control_error_short",
                    "dashboard_link")
    search_fields = ("name", "host")
    readonly_fields = (
        "state", "heartbeat_at", "pid", "tick", "halt_engaged", "halt_since", "halt_reason",
        "halt_requested_at", "control_error", "status_synced_at", "status_pretty", "created_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "state_dir", "host", "queue", "created_at")}),
        ("What the kernel reports", {"fields": (
            "state", "heartbeat_at", "pid", "tick", "halt_engaged", "halt_since", "halt_reason",
            "halt_requested_at", "control_error", "status_synced_at",
        )}),
        ("status.json", {"classes": ("collapse",), "fields": ("status_pretty",)}),
    )

    def get_readonly_fields(self, request, obj=None):
        # The kernel's identity is fixed once it exists: its commands and audit trail name it.
        if obj is not None:
            return ("name", "state_dir") + tuple(self.readonly_fields)
        return self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return False  # its commands, fills and audit trail refer to it

    def save_model(self, request, obj, form, change):
        """Registering (or re-pointing) a kernel goes through kernel_register."""
        try:
            kernel = services.kernel_register(name=obj.name, state_dir=obj.state_dir, host=obj.host,
                                              queue=obj.queue)
        except services.ServiceError as exc:
            raise Refused(exc) from exc
        obj.pk = kernel.pk
        obj.refresh_from_db()

    @admin.display(description="state", ordering="state")
    def state_display(self, obj: Kernel):
        return state_badge("halted" if obj.halt_engaged else obj.state)

    @admin.display(description="heartbeat", ordering="heartbeat_at")
    def heartbeat_display(self, obj: Kernel):
        age = format_age(heartbeat_age(obj))
        if heartbeat_stale(obj):
            return format_html('<strong class="fs-stale">STALE: {}</strong>', age)
        return age

    @admin.display(description="halt")
    def halt_display(self, obj: Kernel):
        if obj.halt_engaged:
            return format_html('<strong class="fs-stale">HALTED</strong> {}', obj.halt_reason)
        if obj.halt_requested_at:
            return format_html('<strong class="fs-stale">halt requested, not confirmed</strong>')
        return "—"

    @admin.display(description="control error")
    def control_error_short(self, obj: Kernel):
        return obj.control_error[:80] or "—"

    @admin.display(description="dashboard")
    def dashboard_link(self, obj: Kernel):
        return format_html('<a href="{}">Dashboard</a>', reverse("admin:trading_kernel_dashboard", args=[obj.pk]))

    @admin.display(description="status.json")
    def status_pretty(self, obj: Kernel):
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", json.dumps(obj.status, indent=2))

    # ---- urls

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/dashboard/", wrap(self.dashboard_view), name="trading_kernel_dashboard"),
            path("<path:object_id>/control/<str:action>/", wrap(self.control_view), name="trading_kernel_control"),
            path("<path:object_id>/halt/", wrap(self.halt_view), name="trading_kernel_halt"),
            path("<path:object_id>/release/", wrap(self.release_view), name="trading_kernel_release"),
            *super().get_urls(),
        ]

    def get_kernel(self, request: HttpRequest, object_id: str) -> Kernel:
        kernel = get_object_or_404(Kernel, pk=unquote(object_id))
        if not self.has_view_permission(request, kernel):
            raise PermissionDenied
        return kernel

    def controls_context(self, request: HttpRequest, kernel: Kernel, next_url: str) -> dict[str, Any]:
        buttons = [
            {"action": a, "label": label, "help": help_text,
             "url": reverse("admin:trading_kernel_control", args=[kernel.pk, a])}
            for a, (label, help_text) in KERNEL_BUTTONS.items() if can(request, a)
        ]
        return {
            "kernel": kernel,
            "kernel_buttons": buttons,
            "kernel_strategies": kernel_strategies(kernel) if buttons else [],
            "can_halt": can(request, "halt"),
            "can_release": can(request, "release"),
            "halt_url": reverse("admin:trading_kernel_halt", args=[kernel.pk]),
            "release_url": reverse("admin:trading_kernel_release", args=[kernel.pk]),
            "next_url": next_url,
        }

    def change_view(self, request, object_id, form_url="", extra_context=None):
        kernel = self.get_object(request, unquote(object_id))
        extra_context = dict(extra_context or {})
        if kernel is not None:
            if request.method == "GET":
                services.status_sync(kernel=kernel)  # what the page shows is the kernel's latest word
                kernel.refresh_from_db()
            extra_context.update(self.controls_context(request, kernel, request.get_full_path()))
            extra_context["dashboard_url"] = reverse("admin:trading_kernel_dashboard", args=[kernel.pk])
            extra_context["heartbeat_stale"] = heartbeat_stale(kernel)
            extra_context["heartbeat_age"] = format_age(heartbeat_age(kernel))
        return super().change_view(request, object_id, form_url, extra_context)

    # ---- the dashboard

    def dashboard_view(self, request: HttpRequest, object_id: str):
        kernel = self.get_kernel(request, object_id)
        window_key = request.GET.get("window", DASHBOARD_DEFAULT_WINDOW)
        if window_key not in DASHBOARD_WINDOWS:
            window_key = DASHBOARD_DEFAULT_WINDOW
        sync_error = ""
        try:
            services.status_sync(kernel=kernel)
        except services.ServiceError as exc:
            sync_error = str(exc)
        kernel.refresh_from_db()
        dashboard = selectors.kernel_dashboard(kernel=kernel, window=DASHBOARD_WINDOWS[window_key])
        dashboard_url = reverse("admin:trading_kernel_dashboard", args=[kernel.pk])
        context = {
            **self.admin_site.each_context(request),
            **self.controls_context(request, kernel, f"{dashboard_url}?window={window_key}"),
            "opts": self.opts,
            "title": f"{kernel.name}: dashboard",
            "subtitle": None,
            "dash": dashboard,
            "sync_error": sync_error,
            "heartbeat_age": format_age(heartbeat_age(kernel)),
            "heartbeat_stale": heartbeat_stale(kernel),
            "windows": list(DASHBOARD_WINDOWS),
            "window": window_key,
            "dashboard_url": dashboard_url,
            "refresh_s": DASHBOARD_REFRESH_S,
            "now": timezone.now(),
            "fragment": bool(request.GET.get("fragment")),
        }
        template = ("admin/trading/kernel/dashboard_live.html" if context["fragment"]
                    else "admin/trading/kernel/dashboard.html")
        response = TemplateResponse(request, template, context)
        response["Cache-Control"] = "no-store"
        return response

    # ---- the buttons

    def control_view(self, request: HttpRequest, object_id: str, action: str):
        if action not in KERNEL_BUTTONS:
            raise Http404(f"no such kernel action: {action}")
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:trading_kernel_change", args=[object_id]))
        kernel = self.get_kernel(request, object_id)
        require(request, action)
        back = safe_next(request, reverse("admin:trading_kernel_change", args=[kernel.pk]))
        strategy = request.POST.get("strategy", "").strip() if action in ("reload", "rollback") else ""
        args = {"strategy": strategy} if strategy else None
        if action == "rollback" and not strategy:
            self.message_user(request, f"Rollback on {kernel}: choose the strategy to roll back", messages.ERROR)
            return HttpResponseRedirect(back)
        label = KERNEL_BUTTONS[action][0] + (f" {strategy}" if strategy else "")
        self.run_command(request, kernel=kernel, action=action, what=f"{label} on {kernel}", args=args)
        return HttpResponseRedirect(back)

    def halt_view(self, request: HttpRequest, object_id: str):
        kernel = self.get_kernel(request, object_id)
        require(request, "halt")
        back = safe_next(request, reverse("admin:trading_kernel_change", args=[kernel.pk]))
        if request.method != "POST" or not request.POST.get("confirm"):
            return TemplateResponse(request, "admin/trading/confirm_action.html", {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": f"HALT {kernel.name}?",
                "object": kernel,
                "danger": True,
                "consequence": (f"This stops every strategy and cancels resting orders on {kernel.name}; "
                                "trading stays stopped until a Risk user releases it."),
                "confirm_label": f"Yes, HALT {kernel.name}",
                "ask_reason": True,
                "action_url": request.path,
                "next_url": back,
            })
        reason = request.POST.get("reason", "").strip() or f"halted from the admin by {request.user.get_username()}"
        actor = services.Actor.from_request(request, "admin")
        try:
            command = services.halt_engage(kernel=kernel, actor=actor, reason=reason)
        except services.ServiceError as exc:
            self.message_user(request, f"HALT on {kernel}: {exc}", messages.ERROR)
            return HttpResponseRedirect(back)
        if command is None:
            self.message_user(
                request,
                f"HALT on {kernel}: written to control.json, but the console's database is unavailable "
                "(the audit event is spooled); check that the kernel reports halted",
                messages.WARNING,
            )
        else:
            command = services.command_wait(command=command, timeout_s=command_wait_s())
            self.report_command(request, command, f"HALT on {kernel}")
        return HttpResponseRedirect(back)

    def release_view(self, request: HttpRequest, object_id: str):
        kernel = self.get_kernel(request, object_id)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:trading_kernel_change", args=[kernel.pk]))
        require(request, "release")
        back = safe_next(request, reverse("admin:trading_kernel_change", args=[kernel.pk]))
        actor = services.Actor.from_request(request, "admin")
        try:
            command = services.halt_release(kernel=kernel, actor=actor)
        except services.ServiceError as exc:
            self.message_user(request, f"Release halt on {kernel}: {exc}", messages.ERROR)
            return HttpResponseRedirect(back)
        command = services.command_wait(command=command, timeout_s=command_wait_s())
        self.report_command(request, command, f"Release halt on {kernel}")
        if command.status == ControlCommand.Status.APPLIED:
            self.message_user(request, f"Kernel {kernel} stays paused until someone resumes it.", messages.INFO)
        return HttpResponseRedirect(back)


# --------------------------------------------------------------------- slots


class SlotForm(forms.ModelForm):
    class Meta:
        model = Slot
        fields = Slot.CONFIG_FIELDS


@admin.register(Slot)
class SlotAdmin(ServiceSaveMixin, CommandButtonsMixin, admin.ModelAdmin):
    form = SlotForm
    list_display = ("__str__", "symbol", "timeframe", "strategy", "state_display", "fault_short",
                    "position_qty", "version_display", "last_cycle_at", "cycles", "missed_cycles",
                    "drift_flag")
    list_filter = ("kernel", "state", "strategy", "timeframe", "enabled")
    search_fields = ("slot_id", "symbol", "strategy")
    list_select_related = ("kernel",)
    actions = ("pause_slots", "resume_slots", "flatten_slots")
    readonly_fields = ("kernel", "slot_id", "drift_display", *MIRROR_FIELDS)
    fieldsets = (
        (None, {"fields": ("kernel", "slot_id")}),
        ("Configuration (what the console wants)", {"fields": Slot.CONFIG_FIELDS}),
        ("What the kernel runs", {"fields": ("drift_display", *MIRROR_FIELDS)}),
    )

    # ---- permissions: editing is configure_slot, nothing is added or deleted here

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return can(request, "slot.configure")

    def has_operate_permission(self, request):
        return can(request, "slot.pause")

    def has_flatten_permission(self, request):
        return can(request, "slot.flatten")

    # ---- columns

    @admin.display(description="state", ordering="state")
    def state_display(self, obj: Slot):
        return state_badge(obj.state)

    @admin.display(description="fault")
    def fault_short(self, obj: Slot):
        return format_html('<span class="fs-stale">{}</span>', obj.fault[:60]) if obj.fault else "—"

    @admin.display(description="version")
    def version_display(self, obj: Slot):
        if obj.strategy_version is None:
            return "—"
        return format_html("v{} <code>{}</code>", obj.strategy_version, obj.strategy_sha256[:8])

    @admin.display(description="config in sync", boolean=True)
    def drift_flag(self, obj: Slot):
        return not obj.config_drift() if obj.running_config else None

    @admin.display(description="differs from what the kernel runs")
    def drift_display(self, obj: Slot):
        drift = obj.config_drift() if obj and obj.pk else {}
        if not obj or not obj.running_config:
            return "the kernel has not reported this slot's configuration yet"
        if not drift:
            return "nothing: the kernel runs this configuration"
        rows = format_html_join(
            "", "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            ((f, json.dumps(db), json.dumps(running)) for f, (db, running) in drift.items()),
        )
        return format_html(
            '<table class="fs-drift"><thead><tr><th>field</th><th>database</th><th>kernel runs</th>'
            "</tr></thead><tbody>{}</tbody></table>", rows,
        )

    # ---- urls and buttons

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/control/<str:action>/", wrap(self.control_view), name="trading_slot_control"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        slot = self.get_object(request, unquote(object_id))
        extra_context = dict(extra_context or {})
        if slot is not None and request.method == "GET":
            services.status_sync(kernel=slot.kernel)  # the mirror fields and the drift, fresh
            slot.refresh_from_db()
        if slot is not None:
            extra_context["slot_buttons"] = [
                {"action": a, "label": label, "help": help_text,
                 "url": reverse("admin:trading_slot_control", args=[slot.pk, a]),
                 "confirm": a == "slot.flatten"}
                for a, (label, help_text) in SLOT_BUTTONS.items() if can(request, a)
            ]
            extra_context["drift"] = slot.config_drift()
            extra_context["kernel_url"] = reverse("admin:trading_kernel_dashboard", args=[slot.kernel_id])
        return super().change_view(request, object_id, form_url, extra_context)

    def control_view(self, request: HttpRequest, object_id: str, action: str):
        if action not in SLOT_BUTTONS:
            raise Http404(f"no such slot action: {action}")
        slot = get_object_or_404(Slot.objects.select_related("kernel"), pk=unquote(object_id))
        if not self.has_view_permission(request, slot):
            raise PermissionDenied
        require(request, action)
        change_url = reverse("admin:trading_slot_change", args=[slot.pk])
        back = safe_next(request, change_url)
        label = SLOT_BUTTONS[action][0]
        if action == "slot.flatten" and not (request.method == "POST" and request.POST.get("confirm")):
            services.status_sync(kernel=slot.kernel)  # the position named below is the latest reported
            slot.refresh_from_db()
            return TemplateResponse(request, "admin/trading/confirm_action.html", {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": f"Flatten {slot}?",
                "object": slot,
                "danger": True,
                "consequence": (f"This sells the whole position of {slot} at market "
                                f"(now {slot.position_qty:g} {slot.symbol.split('/')[0]}) and pauses the slot."),
                "confirm_label": f"Yes, flatten {slot}",
                "action_url": request.path,
                "next_url": back,
            })
        if request.method != "POST":
            return HttpResponseRedirect(change_url)
        self.run_command(request, kernel=slot.kernel, action=action, slot_id=slot.slot_id,
                         what=f"{label} on {slot}")
        return HttpResponseRedirect(back)

    # ---- changelist actions

    @admin.action(description="Pause selected slots (no new entries)", permissions=["operate"])
    def pause_slots(self, request, queryset):
        self.run_bulk(request, queryset.select_related("kernel"), "slot.pause", "Pause")

    @admin.action(description="Resume selected slots", permissions=["operate"])
    def resume_slots(self, request, queryset):
        self.run_bulk(request, queryset.select_related("kernel"), "slot.resume", "Resume")

    @admin.action(description="Flatten selected slots (sell at market)…", permissions=["flatten"])
    def flatten_slots(self, request, queryset):
        slots = list(queryset.select_related("kernel"))
        if request.POST.get("confirm"):
            self.run_bulk(request, slots, "slot.flatten", "Flatten")
            return None
        return TemplateResponse(request, "admin/trading/confirm_action.html", {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Flatten {len(slots)} slot(s)?",
            "objects": slots,
            "danger": True,
            "consequence": ("This sells the whole position of each slot below at market and pauses it: "
                            + ", ".join(str(s) for s in slots) + "."),
            "confirm_label": f"Yes, flatten {len(slots)} slot(s)",
            "action_url": request.get_full_path(),
            "bulk_action": "flatten_slots",
            "selected": [s.pk for s in slots],
            "next_url": reverse("admin:trading_slot_changelist"),
        })

    # ---- editing goes through slot_configure

    def save_model(self, request, obj, form, change):
        """Never saves the model itself: slot_configure validates, saves, audits and sends."""
        slot = Slot.objects.select_related("kernel").get(pk=obj.pk)
        changes = {f: form.cleaned_data[f] for f in form.changed_data if f in Slot.CONFIG_FIELDS}
        if not changes:
            return
        try:
            request.admin_command = services.slot_configure(
                slot=slot, changes=changes, actor=services.Actor.from_request(request, "admin"))
        except services.NotAllowed:
            raise PermissionDenied
        except services.ServiceError as exc:
            raise Refused(exc) from exc
        request.admin_command_label = f"New configuration ({', '.join(sorted(changes))}) on {slot}"


# --------------------------------------------------------------------- commands


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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


# --------------------------------------------------------------------- audit log

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


# --------------------------------------------------------------------- API tokens


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="what the token is for, e.g. 'grafana' or 'laptop cli'")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix_display", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    fields = ("name", "user", "prefix_display", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ("revoke_tokens",)

    # Like the API: every console user manages their own tokens (a viewer needs one to read
    # through the API too); view_apitoken shows everyone's, a superuser may revoke anyone's.

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser or request.user.has_perm("trading.view_apitoken"):
            return qs
        return qs.filter(user=request.user)

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if obj is None or obj.user_id == request.user.pk:
            return self.has_module_permission(request)
        return super().has_view_permission(request, obj)

    def has_add_permission(self, request):
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # revoked, never deleted: the audit log names them

    def has_revoke_permission(self, request):
        return self.has_module_permission(request)  # token_revoke checks whose token it is

    @admin.display(description="prefix")
    def prefix_display(self, obj: ApiToken):
        return f"{obj.prefix}…"

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ApiTokenCreateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            token, raw = services.token_create(user=request.user, name=form.cleaned_data["name"],
                                               actor=services.Actor.from_request(request, "admin"))
            self.message_user(
                request,
                format_html("API token “{}” created. Copy it now, it is not shown again: <code>{}</code>",
                            token.name, raw),
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:trading_apitoken_changelist"))
        return TemplateResponse(request, "admin/trading/apitoken/add_form.html", {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Create an API token for yourself",
            "form": form,
            "has_view_permission": self.has_view_permission(request),
        })

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request, queryset):
        actor = services.Actor.from_request(request, "admin")
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            try:
                services.token_revoke(token=token, actor=actor)
                revoked += 1
            except services.ServiceError as exc:
                self.message_user(request, f"Token {token.name}: {exc}", messages.ERROR)
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS if revoked else messages.INFO)
