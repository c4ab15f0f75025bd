"""The slot's admin: its page (the configuration the console wants beside what the kernel
runs, the kernel's health and the slot's effective state, the params that run with their
defaults, fills, P&L and a chart, refreshed in place), its buttons (pause, resume, flatten),
the changelist's bulk actions, and editing through slot_configure."""
from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import urlencode
from django.utils.html import format_html, format_html_join

from .. import selectors, services
from ..models import Slot
from ..templatetags.trading_format import num
from .access import can, require, safe_next
from .command_buttons import CommandButtonsMixin, kernel_silent, silent_consequence, slot_button_shown
from .confirm_views import confirmation_page, confirmed
from .display import exact_time, format_age, heartbeat_age, state_badge
from .service_forms import Refused, ServiceSaveMixin

SLOT_BUTTONS = {
    "slot.pause": ("Pause", "this slot takes no new entries"),
    "slot.resume": ("Resume", "this slot trades again; a fault on it is cleared"),
    "slot.flatten": ("Flatten", "sells the whole position at market and pauses the slot"),
}
SLOT_REFRESH_S = 5
# The position, prices, P&L and cycles are in the live tiles above the form, rounded with the
# full value on hover (templates/admin/trading/slot/_live.html); not repeated here as raw floats.
MIRROR_FIELDS = (
    "state", "fault", "strategy_version", "strategy_sha256", "last_cycle_utc", "next_cycle_utc",
    "running_config",
)


class SlotForm(forms.ModelForm):
    class Meta:
        model = Slot
        fields = Slot.CONFIG_FIELDS


@admin.register(Slot)
class SlotAdmin(ServiceSaveMixin, CommandButtonsMixin, admin.ModelAdmin):
    form = SlotForm
    list_display = ("__str__", "symbol", "timeframe", "strategy", "state_display", "fault_short",
                    "position_display", "version_display", "last_cycle_utc", "cycles", "missed_cycles",
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

    @admin.display(description="state (effective)", ordering="state")
    def state_display(self, obj: Slot):
        """What the slot really does: a slot of a halted or silent kernel is not "active"."""
        state = selectors.slot_effective_state(obj)
        if state == obj.state:
            return state_badge(state)
        return format_html('<strong class="fs-stale" title="the slot itself reports {}">{}</strong>', obj.state, state)

    @admin.display(description="position", ordering="position_qty")
    def position_display(self, obj: Slot):
        return num(obj.position_qty)

    @admin.display(description="last cycle (UTC)", ordering="last_cycle_at")
    def last_cycle_utc(self, obj: Slot):
        return exact_time(obj.last_cycle_at)

    @admin.display(description="next cycle (UTC)", ordering="next_cycle_at")
    def next_cycle_utc(self, obj: Slot):
        return exact_time(obj.next_cycle_at)

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

    def live_context(self, slot: Slot) -> dict:
        """The parts of the slot page that refresh themselves (?fragment=1 renders only them)."""
        kernel = slot.kernel
        return {
            "slot": slot, "kernel": kernel, "page": selectors.slot_page(slot=slot),
            "heartbeat_age": format_age(heartbeat_age(kernel)),
            "heartbeat_at": exact_time(kernel.heartbeat_at) if kernel.heartbeat_at else "never",
            "silent": kernel_silent(kernel),
        }

    def change_view(self, request, object_id, form_url="", extra_context=None):
        slot = self.get_object(request, unquote(object_id))
        extra_context = dict(extra_context or {})
        if slot is not None and request.method == "GET":
            # The mirror fields and the drift, fresh, without turning a page view into a write.
            services.status_sync_if_stale(kernel=slot.kernel)
            slot.refresh_from_db()
            if request.GET.get("fragment"):
                response = TemplateResponse(request, "admin/trading/slot/_live.html", self.live_context(slot))
                response["Cache-Control"] = "no-store"
                return response
        if slot is not None:
            extra_context["slot_buttons"] = [
                {"action": a, "label": label, "help": help_text,
                 "url": reverse("admin:trading_slot_control", args=[slot.pk, a]),
                 "confirm": a == "slot.flatten" or kernel_silent(slot.kernel)}
                for a, (label, help_text) in SLOT_BUTTONS.items() if can(request, a) and slot_button_shown(a, slot)
            ]
            extra_context["drift"] = slot.config_drift()
            extra_context["kernel_url"] = reverse("admin:trading_kernel_dashboard", args=[slot.kernel_id])
            extra_context["audit_url"] = (reverse("admin:trading_auditevent_changelist") + "?"
                                          + urlencode({"slot": slot.slot_id}))
            extra_context["params"] = selectors.effective_params(slot)
            extra_context["refresh_s"] = SLOT_REFRESH_S
            extra_context.update(self.live_context(slot))
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
        silent = silent_consequence(slot.kernel, f"{label} on {slot}") if kernel_silent(slot.kernel) else ""
        if silent and action != "slot.flatten" and not confirmed(request):
            return confirmation_page(
                request, model_admin=self, title=f"{label} on {slot}?", object=slot, consequence=silent,
                confirm_label=f"Yes, {label.lower()} when it returns", danger=False,
                action_url=request.path, next_url=back,
            )
        if action == "slot.flatten" and not confirmed(request):
            services.status_sync_if_stale(kernel=slot.kernel)  # the position named below is the latest reported
            slot.refresh_from_db()
            return confirmation_page(
                request, model_admin=self, title=f"Flatten {slot}?", object=slot,
                consequence=(f"This sells the whole position of {slot} at market "
                             f"(now {slot.position_qty:g} {slot.symbol.split('/')[0]}) and pauses the slot."
                             + (f" {silent}" if silent else "")),
                confirm_label=f"Yes, flatten {slot}", action_url=request.path, next_url=back,
            )
        if request.method != "POST":
            return HttpResponseRedirect(change_url)
        self.run_command(request, kernel=slot.kernel, action=action, slot_id=slot.slot_id,
                         what=f"{label} on {slot}")
        return HttpResponseRedirect(back)

    # ---- changelist actions

    @admin.action(description="Pause selected slots (no new entries)", permissions=["operate"])
    def pause_slots(self, request, queryset):
        return self.bulk_unless_silent(request, queryset, "slot.pause", "Pause", "pause_slots")

    @admin.action(description="Resume selected slots", permissions=["operate"])
    def resume_slots(self, request, queryset):
        return self.bulk_unless_silent(request, queryset, "slot.resume", "Resume", "resume_slots")

    def bulk_unless_silent(self, request, queryset, action: str, label: str, bulk_action: str):
        """Sent at once, unless a kernel concerned is not reporting: then a confirmation first."""
        slots = list(queryset.select_related("kernel"))
        silent = {s.kernel.name: s.kernel for s in slots if kernel_silent(s.kernel)}
        if silent and not confirmed(request):
            return confirmation_page(
                request, model_admin=self, title=f"{label} {len(slots)} slot(s)?", objects=slots, danger=False,
                consequence=" ".join(silent_consequence(k, f"{label} on its slots") for k in silent.values()),
                confirm_label=f"Yes, {label.lower()} {len(slots)} slot(s)", action_url=request.get_full_path(),
                bulk_action=bulk_action, selected=[s.pk for s in slots],
                next_url=reverse("admin:trading_slot_changelist"),
            )
        self.run_bulk(request, slots, action, label)
        return None

    @admin.action(description="Flatten selected slots (sell at market)…", permissions=["flatten"])
    def flatten_slots(self, request, queryset):
        slots = list(queryset.select_related("kernel"))
        if confirmed(request):
            self.run_bulk(request, slots, "slot.flatten", "Flatten")
            return None
        return confirmation_page(
            request, model_admin=self, title=f"Flatten {len(slots)} slot(s)?", objects=slots,
            consequence=("This sells the whole position of each slot below at market and pauses it: "
                         + ", ".join(str(s) for s in slots) + "."),
            confirm_label=f"Yes, flatten {len(slots)} slot(s)", action_url=request.get_full_path(),
            bulk_action="flatten_slots", selected=[s.pk for s in slots],
            next_url=reverse("admin:trading_slot_changelist"),
        )

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
