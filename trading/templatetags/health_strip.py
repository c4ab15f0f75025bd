"""The health strip on every admin page (issue 14): ``{% health_strip %}`` in
templates/admin/base_site.html. It first syncs this machine's stale mirrors (once per request:
without a sync loop nothing else would, and a healthy kernel would read "not reporting"; a
fresh mirror is only read), then makes one selector call (selectors.console_health)."""
from __future__ import annotations

from django import template

from .. import selectors, services
from ..admin.display import exact_time, format_age

register = template.Library()


@register.inclusion_tag("admin/trading/_health_strip.html", takes_context=True)
def health_strip(context) -> dict:
    """Nothing for a visitor who may not see kernels (the login page, a user without the
    view permission); otherwise every kernel's health."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff or not user.has_perm("trading.view_kernel"):
        return {"health": None}
    if not getattr(request, "_fs_mirrors_synced", False):
        request._fs_mirrors_synced = True
        services.local_kernels_sync_if_stale()
    health = selectors.console_health()
    for row in health["kernels"]:
        row["age_text"] = format_age(health["at"] - row["heartbeat_at"]) if row["heartbeat_at"] else "never"
        row["heartbeat_text"] = exact_time(row["heartbeat_at"])
        row["halt_since_text"] = exact_time(row["halt"]["since"]) if row["halt"] else ""
    return {"health": health}
