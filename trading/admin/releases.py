"""Releases in the admin (issue 11): a versions page per kernel and strategy (the stored
versions, which slots run each, a diff between any two), its buttons (rollback to a version,
canary on chosen slots, shadow, promote, abort), each with a confirmation and a reason, and
the fleet-wide reload of a strategy. Views registered by the Kernel admin (KernelAdmin.get_urls);
each button is one service call (trading/services/releases.py)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.http import urlencode

from kernel.protocol import STRATEGY_RE

from .. import selectors, services
from ..models import Kernel
from .access import can, require
from .command_buttons import command_wait_s
from .confirm_views import confirmation_page, confirmed

# step -> (the permission's action, button label, what it does in the operator's words)
RELEASE_STEPS = {
    "rollback": ("rollback", "Roll back to this version",
                 "every slot of {strategy} goes back to v{version}, loaded from the kernel's store and checked "
                 "like a reload"),
    "canary": ("reload", "Start a canary",
               "the strategies folder's {strategy} is loaded, checked and run on {slots} only; the other slots keep "
               "the current version. Within the budget, a fault rolls the canary slots back by itself"),
    "shadow": ("reload", "Start a shadow",
               "the strategies folder's {strategy} is evaluated beside the live version after each live cycle, "
               "sending no order; its differences show on the dashboard"),
    "promote": ("promote", "Promote",
                "the {kind} version of {strategy} becomes current for EVERY slot of it"),
    "abort": ("rollback", "Abort",
              "the {kind} of {strategy} ends: its slots go back to the current version (a rollback on the wire)"),
}


def _strategy(strategy: str) -> str:
    if not STRATEGY_RE.match(strategy):
        raise Http404("no such strategy")
    return strategy


class ReleaseViewsMixin:
    """For KernelAdmin: the release pages and buttons (its get_kernel, report_command, run_issued)."""

    def release_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("fleet/<str:strategy>/reload/", wrap(self.fleet_reload_view), name="trading_kernel_fleet_reload"),
            path("<path:object_id>/strategies/<str:strategy>/versions/", wrap(self.versions_view),
                 name="trading_kernel_versions"),
            path("<path:object_id>/strategies/<str:strategy>/<str:step>/", wrap(self.release_step_view),
                 name="trading_kernel_release_step"),
        ]

    # ---- the versions page

    def versions_view(self, request: HttpRequest, object_id: str, strategy: str):
        kernel = self.get_kernel(request, object_id)
        strategy = _strategy(strategy)
        try:
            services.status_sync_if_stale(kernel=kernel)
        except services.ServiceError:
            pass
        kernel.refresh_from_db()
        listing = selectors.strategy_versions(kernel=kernel, strategy=strategy)
        diff, diff_error = None, ""
        a, b = request.GET.get("a", "").strip(), request.GET.get("b", "").strip()
        if a and b:
            try:
                diff = selectors.version_diff(kernel=kernel, strategy=strategy, a=a, b=b)
            except services.ServiceError as exc:
                diff_error = str(exc)
        page_url = reverse("admin:trading_kernel_versions", args=[kernel.pk, strategy])
        steps = {step: reverse("admin:trading_kernel_release_step", args=[kernel.pk, strategy, step])
                 for step, (action, _, _) in RELEASE_STEPS.items() if can(request, action)}
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{kernel.name}: {strategy} versions",
            "subtitle": None,
            "kernel": kernel,
            "strategy": strategy,
            "listing": listing,
            "strategy_slots": list(kernel.slots.filter(strategy=strategy).order_by("slot_id")
                                   .values_list("slot_id", flat=True)),
            "diff": diff,
            "diff_error": diff_error,
            "a": a,
            "b": b,
            "steps": steps,
            "page_url": page_url,
            "dashboard_url": reverse("admin:trading_kernel_dashboard", args=[kernel.pk]),
        }
        response = TemplateResponse(request, "admin/trading/kernel/versions.html", context)
        response["Cache-Control"] = "no-store"
        return response

    # ---- the buttons

    def release_step_view(self, request: HttpRequest, object_id: str, strategy: str, step: str):
        if step not in RELEASE_STEPS:
            raise Http404(f"no such release step: {step}")
        strategy = _strategy(strategy)
        kernel = self.get_kernel(request, object_id)
        back = reverse("admin:trading_kernel_versions", args=[kernel.pk, strategy])
        if request.method != "POST":
            return HttpResponseRedirect(back)
        action, label, consequence = RELEASE_STEPS[step]
        require(request, action)
        fields = _step_fields(request, step)
        if not confirmed(request):
            return confirmation_page(
                request, model_admin=self, title=f"{label}: {strategy} on {kernel.name}?", object=kernel,
                consequence=consequence.format(strategy=strategy, version=fields.get("version", "?"),
                                               slots=", ".join(fields.get("slots", [])) or "no slot",
                                               kind=_kind(kernel, strategy)) + ".",
                confirm_label=f"Yes: {label.lower()} on {kernel.name}", ask_reason=True, reason_required=True,
                action_url=request.path, next_url=back, hidden=_hidden(fields),
            )
        actor = services.Actor.from_request(request, "admin")
        reason = request.POST.get("reason", "")
        target = f" to v{fields['version']}" if "version" in fields else ""
        what = f"{step.capitalize()} of {strategy}{target} on {kernel}"
        self.run_issued(request, what=what, issue=lambda: _issue(step, kernel, strategy, actor, reason, fields))
        return HttpResponseRedirect(back)

    def fleet_reload_view(self, request: HttpRequest, strategy: str):
        strategy = _strategy(strategy)
        back = reverse("admin:trading_kernel_changelist")
        if request.method != "POST":
            return HttpResponseRedirect(back)
        require(request, "fleet.reload")
        names = [n for n in request.POST.getlist("kernel") if n]
        kernels = names or [k.name for k in services.fleet_kernels(strategy=strategy)]
        if not confirmed(request):
            return confirmation_page(
                request, model_admin=self, title=f"Reload {strategy} on the fleet?",
                consequence=(f"{strategy} is reloaded from each kernel's strategies folder on every kernel listed, "
                             "at once; the result says per kernel which sha256 it runs and whether the fleet "
                             "converged to one."),
                objects=kernels, confirm_label=f"Yes: reload {strategy} on {len(kernels)} kernel(s)",
                ask_reason=True, reason_required=True, action_url=request.path, next_url=back,
                hidden=[("kernel", n) for n in names],
            )
        actor = services.Actor.from_request(request, "admin")
        try:
            report = services.fleet_reload(strategy=strategy, actor=actor, reason=request.POST.get("reason", ""),
                                           timeout_s=command_wait_s(), kernel_names=names or None)
        except services.ServiceError as exc:
            self.message_user(request, f"Fleet reload of {strategy}: {exc}", messages.ERROR)
            return HttpResponseRedirect(back)
        head = (f"Fleet reload of {strategy}: converged to {report.sha256[:12]}" if report.converged else
                f"Fleet reload of {strategy}: NOT converged"
                + (f" (the fleet's sha256: {report.sha256[:12]})" if report.sha256 else " (no one sha256 leads)"))
        self.message_user(request, head, messages.SUCCESS if report.converged else messages.ERROR)
        for row in report.kernels:
            runs = f"runs v{row.version} {row.sha256[:12]}" if row.sha256 else "reports no version"
            text = f"{row.kernel}: {row.status}{f' ({row.error})' if row.error else ''}, {runs}"
            self.message_user(request, text + ("" if row.converged else ": not converged"),
                              messages.SUCCESS if row.converged else messages.WARNING)
        return HttpResponseRedirect(back)


def _kind(kernel: Kernel, strategy: str) -> str:
    from ..release_status import running_release

    running = running_release(kernel, strategy)
    return running[0] if running else "canary or shadow"


def _int(request: HttpRequest, name: str) -> int | None:
    raw = request.POST.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return -1  # refused by the service with its own message


def _step_fields(request: HttpRequest, step: str) -> dict[str, Any]:
    """What the button posted (the form, or the confirmation page's hidden copy of it)."""
    fields: dict[str, Any] = {}
    if step == "rollback":
        version, sha = _int(request, "version"), request.POST.get("sha256", "").strip()
        if version is not None:
            fields["version"] = version
        elif sha:
            fields["sha256"] = sha
    elif step == "canary":
        fields["slots"] = [s for s in request.POST.getlist("slots") if s]
        budget = {k: v for k in ("cycles", "faults") if (v := _int(request, f"budget_{k}")) is not None}
        if budget:
            fields["budget"] = budget
    elif step == "shadow":
        cycles = _int(request, "cycles")
        if cycles is not None:
            fields["cycles"] = cycles
    return fields


def _hidden(fields: dict[str, Any]) -> list[tuple[str, Any]]:
    hidden: list[tuple[str, Any]] = []
    for key, value in fields.items():
        if key == "slots":
            hidden += [("slots", s) for s in value]
        elif key == "budget":
            hidden += [(f"budget_{k}", v) for k, v in value.items()]
        else:
            hidden.append((key, value))
    return hidden


def _issue(step: str, kernel: Kernel, strategy: str, actor, reason: str, fields: dict[str, Any]):
    common = {"kernel": kernel, "strategy": strategy, "actor": actor, "reason": reason}
    if step == "rollback":
        return services.release_rollback(**common, version=fields.get("version"), sha256=fields.get("sha256"))
    if step == "canary":
        return services.release_canary(**common, slots=fields.get("slots", []), budget=fields.get("budget"))
    if step == "shadow":
        return services.release_shadow(**common, cycles=fields.get("cycles"))
    if step == "promote":
        return services.release_promote(**common)
    return services.release_abort(**common)


def versions_url(kernel: Kernel, strategy: str, **query: str) -> str:
    url = reverse("admin:trading_kernel_versions", args=[kernel.pk, strategy])
    return f"{url}?{urlencode(query)}" if query else url


# ---- the kernels list: per strategy, the sha256 each kernel runs, drift flagged loudly

_FLEET: ContextVar[dict[str, dict[str, Any]] | None] = ContextVar("fleet", default=None)


@contextmanager
def fleet_scope(request: HttpRequest) -> Iterator[dict[str, dict[str, Any]]]:
    """The fleet's releases read once for a whole changelist (each row's column uses it)."""
    fleet = selectors.fleet_strategies()
    token = _FLEET.set(fleet)
    try:
        yield fleet
    finally:
        _FLEET.reset(token)


def fleet_column(kernel: Kernel) -> str:
    fleet = _FLEET.get()
    if fleet is None:
        fleet = selectors.fleet_strategies()
    releases = selectors.kernel_releases(kernel)
    if not releases:
        return "—"
    rows = []
    for name, rel in releases.items():
        flags = []
        if rel["working_tree_differs"]:
            flags.append(format_html(' <strong class="fs-stale fs-drift" title="{}">DRIFT: working tree differs from '
                                     'running v{}</strong>', rel["working_tree_sha256"] or "a file is missing",
                                     rel["version"]))
        entry = fleet.get(name) or {}
        if len(entry.get("shas") or []) > 1:
            flags.append(format_html(' <strong class="fs-stale fs-drift" title="{}">DRIFT: the fleet runs {} '
                                     'versions</strong>', "; ".join(entry["reasons"]), len(entry["shas"])))
        for kind in ("canary", "shadow"):
            if rel[kind]:
                flags.append(format_html(' <em class="fs-release">{} running</em>', kind))
        rows.append((versions_url(kernel, name), name, rel["version"], rel["sha256"], rel["sha256"][:12],
                     format_html_join("", "{}", ((f,) for f in flags))))
    return format_html_join(mark_safe("<br>"), '<a href="{}">{}</a> v{} <code title="{}">{}</code>{}', rows)
