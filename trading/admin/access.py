"""Who may press which button, and where a button may send the operator back to."""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme

from .. import services


def can(request: HttpRequest, action: str) -> bool:
    return request.user.has_perm(services.required_permission(action))


def require(request: HttpRequest, action: str) -> None:
    if not can(request, action):
        raise PermissionDenied(f"you may not {action}")


def safe_next(request: HttpRequest, default: str) -> str:
    """The page the button was pressed on, if it is on this site: never an open redirect."""
    nxt = request.POST.get("next") or request.GET.get("next") or ""
    if nxt and url_has_allowed_host_and_scheme(
        nxt, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return nxt
    return default
