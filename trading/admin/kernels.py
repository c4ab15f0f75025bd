"""The kernel's admin: its page and dashboard (read from the mirror, synced only if stale),
its buttons (start, stop, pause, resume, reload, rollback), HALT and its release."""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from .. import selectors, services
from ..models import ControlCommand, Kernel
from .access import can, require, safe_next
from .command_buttons import (BUTTON_TEXT, CommandButtonsMixin, command_wait_s, halt_display,
                              kernel_button_shown, kernel_silent, silent_consequence)
from .confirm_views import confirmation_page, confirmed
from .display import format_age, heartbeat_age, heartbeat_stale, state_badge
from .kernel_times import KernelTimesMixin
from .releases import ReleaseViewsMixin, fleet_column, fleet_scope
from .report import ReportViewMixin
from .service_forms import Refused, ServiceSaveMixin

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


@admin.register(Kernel)
class KernelAdmin(KernelTimesMixin, ReportViewMixin, ReleaseViewsMixin, ServiceSaveMixin, CommandButtonsMixin,
                  admin.ModelAdmin):
    list_display = ("name", "state_display", "heartbeat_display", "halt_display", "control_error_short",
                    "strategies_display", "dashboard_link")
    search_fields = ("name", "host")
    readonly_fields = (
        "state", "heartbeat_time", "started_time", "pid", "tick", "halt_engaged", "halt_since_time",
        "halt_reason", "halt_requested_time", "control_error", "status_synced_time", "status_pretty",
        "created_time",
    )
    fieldsets = (
        (None, {"fields": ("name", "state_dir", "host", "queue", "created_time")}),
        ("What the kernel reports", {"fields": (
            "state", "heartbeat_time", "started_time", "pid", "tick", "halt_engaged", "halt_since_time",
            "halt_reason", "halt_requested_time", "control_error", "status_synced_time",
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

    # ---- columns

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

    @admin.display(description="strategies (sha256)")
    def strategies_display(self, obj: Kernel):
        return fleet_column(obj)

    def changelist_view(self, request, extra_context=None):
        with fleet_scope(request) as fleet:  # the fleet's drift, read once for every row
            extra_context = {**(extra_context or {}), "fleet": fleet,
                             "can_fleet_reload": can(request, "fleet.reload")}
            response = super().changelist_view(request, extra_context)
            if hasattr(response, "render"):
                response.render()
            return response

    @admin.display(description="dashboard")
    def dashboard_link(self, obj: Kernel):
        return format_html('<a href="{}">Dashboard</a> · <a href="{}">Report</a>',
                           reverse("admin:trading_kernel_dashboard", args=[obj.pk]),
                           reverse("admin:trading_kernel_report", args=[obj.pk]))

    @admin.display(description="status.json")
    def status_pretty(self, obj: Kernel):
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", json.dumps(obj.status, indent=2))

    # ---- urls

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            *self.release_urls(),
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
            {"action": a, "label": BUTTON_TEXT.get(a, label), "help": help_text,
             "url": reverse("admin:trading_kernel_control", args=[kernel.pk, a])}
            for a, (label, help_text) in KERNEL_BUTTONS.items() if can(request, a) and kernel_button_shown(a, kernel)
        ]
        return {
            "kernel": kernel,
            "kernel_buttons": buttons,
            "kernel_strategies": selectors.kernel_strategies(kernel=kernel) if buttons else [],
            "can_halt": can(request, "halt"),
            "can_release": can(request, "release") and kernel.halt_engaged,  # Release only while halted
            "halted": halt_display(kernel),
            "silent": kernel_silent(kernel),
            "kernel_audit_url": reverse("admin:trading_auditevent_changelist") + "?" + urlencode({"kernel": kernel.name}),
            "halt_url": reverse("admin:trading_kernel_halt", args=[kernel.pk]),
            "release_url": reverse("admin:trading_kernel_release", args=[kernel.pk]),
            "next_url": next_url,
        }

    def change_view(self, request, object_id, form_url="", extra_context=None):
        kernel = self.get_object(request, unquote(object_id))
        extra_context = dict(extra_context or {})
        if kernel is not None:
            if request.method == "GET":
                # The kernel's latest word, without turning every page view into a write.
                services.status_sync_if_stale(kernel=kernel)
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
            # Polled every few seconds by every open dashboard: a read unless status.json moved.
            services.status_sync_if_stale(kernel=kernel)
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
        if not confirmed(request) and (action == "rollback" or kernel_silent(kernel)):
            silent = silent_consequence(kernel, f"{BUTTON_TEXT.get(action, label)}") if kernel_silent(kernel) else ""
            rollback = action == "rollback"
            return confirmation_page(
                request, model_admin=self, title=f"{label} on {kernel.name}?", object=kernel,
                consequence=" ".join(filter(None, [
                    f"This swaps {strategy} on {kernel.name} back to its previous version on every slot "
                    "that runs it." if rollback else "", silent])),
                confirm_label=f"Yes, {label.lower()}" + (" when it returns" if silent else ""),
                ask_reason=rollback, reason_goes="goes into the audit log", danger=rollback, hidden=[("strategy", strategy)] if strategy else [],
                action_url=request.path, next_url=back,
            )
        if action == "rollback":
            actor = services.Actor.from_request(request, "admin")
            # Optional on this page: release_rollback audits a reason, so the admin names a default.
            reason = request.POST.get("reason", "").strip() or f"rolled back from the admin by {request.user.get_username()}"
            self.run_issued(request, what=f"{label} on {kernel}", issue=lambda: services.release_rollback(
                kernel=kernel, strategy=strategy, actor=actor, reason=reason))
            return HttpResponseRedirect(back)
        self.run_command(request, kernel=kernel, action=action, what=f"{label} on {kernel}", args=args)
        return HttpResponseRedirect(back)

    def halt_view(self, request: HttpRequest, object_id: str):
        kernel = self.get_kernel(request, object_id)
        require(request, "halt")
        back = safe_next(request, reverse("admin:trading_kernel_change", args=[kernel.pk]))
        if not confirmed(request):
            return confirmation_page(
                request, model_admin=self, title=f"HALT {kernel.name}?", object=kernel,
                consequence=(f"This stops every strategy and cancels resting orders on {kernel.name}; "
                             "trading stays stopped until a Risk user releases it."),
                confirm_label=f"Yes, HALT {kernel.name}", ask_reason=True, action_url=request.path, next_url=back,
            )
        # The admin's own wording (the API requires a reason, kernelctl has its own default):
        # halt_engage's fallback stays the one for callers that name no reason at all.
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
        require(request, "release")
        back = safe_next(request, reverse("admin:trading_kernel_change", args=[kernel.pk]))
        reason = request.POST.get("reason", "").strip() if request.method == "POST" else ""
        if not (confirmed(request) and reason):
            services.status_sync_if_stale(kernel=kernel)
            kernel.refresh_from_db()
            if not kernel.halt_engaged and request.method != "POST":
                return HttpResponseRedirect(back)
            if kernel.halt_engaged:  # not halted: the service below refuses with its reason
                return confirmation_page(
                    request, model_admin=self, title=f"Release the halt of {kernel.name}?", object=kernel,
                    consequence=(f"This clears the halt of {kernel.name} (\"{kernel.halt_reason or 'no reason given'}\"). "
                                 "The kernel then stays paused: no strategy enters until someone resumes it."
                                 + (" " + silent_consequence(kernel, "The release") if kernel_silent(kernel) else "")),
                    confirm_label=f"Yes, release {kernel.name}", ask_reason=True, reason_required=True,
                    reason_goes="goes into the audit log", reason_placeholder="e.g. exchange back to normal, positions checked",
                    reason_error="A reason is required to release a halt." if confirmed(request) else "",
                    danger=False, action_url=request.path, next_url=back,
                )
        actor = services.Actor.from_request(request, "admin")
        command = self.run_issued(request, what=f"Release halt on {kernel}",
                                  issue=lambda: services.halt_release(kernel=kernel, actor=actor, reason=reason))
        if command is not None and command.status == ControlCommand.Status.APPLIED:
            self.message_user(request, f"Kernel {kernel} stays paused until someone resumes it.", messages.INFO)
        return HttpResponseRedirect(back)
