"""The one confirmation page of the dangerous buttons (HALT and its release, Flatten one slot
or many, rollback) and of any command to a kernel that is not reporting.

A dangerous button acts only on a POST carrying the page's answer; anything else shows the
page, which names the consequence in the operator's words."""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

CONFIRM_TEMPLATE = "admin/trading/confirm_action.html"


def confirmed(request: HttpRequest) -> bool:
    return request.method == "POST" and bool(request.POST.get("confirm"))


def confirmation_page(request: HttpRequest, *, model_admin: admin.ModelAdmin, title: str, consequence: str,
                      confirm_label: str, action_url: str, next_url: str, **details: Any) -> TemplateResponse:
    """``details``: ``object`` or ``objects`` (what is concerned), ``ask_reason`` (with
    ``reason_required``, ``reason_error``, ``reason_goes``, ``reason_placeholder``), ``hidden``
    ((name, value) pairs to post again), ``danger`` (False: a plain confirmation), and for a
    changelist action ``bulk_action`` with the ``selected`` pks to post again."""
    return TemplateResponse(request, CONFIRM_TEMPLATE, {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": title,
        "danger": True,
        "consequence": consequence,
        "confirm_label": confirm_label,
        "action_url": action_url,
        "next_url": next_url,
        **details,
    })
