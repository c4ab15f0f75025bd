"""Requests refused before they reach a view: NUL characters.

PostgreSQL cannot store a NUL in text or jsonb, and nothing in the console has a use for one:
a NUL in a query string or an API body is refused with 400, the way Django's own form fields
refuse it (ProhibitNullCharactersValidator), instead of surfacing as a database error. The halt
is the exception: its body is never refused (in doubt, stop); the halt service spells a NUL out.
"""
from __future__ import annotations

from typing import Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse

REFUSED = "NUL characters are not accepted"


def _has_nul_query(request: HttpRequest) -> bool:
    return any("\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists())


def _has_nul_body(request: HttpRequest) -> bool:
    if not request.path.startswith("/api/") or request.path.rstrip("/").endswith("/halt"):
        return False
    if request.method not in ("POST", "PUT", "PATCH") or "json" not in (request.content_type or ""):
        return False
    try:
        body = request.body
    except RequestDataTooBig:
        return False  # the API answers that one itself (413)
    return b"\x00" in body or b"\\u0000" in body


class RefuseNulCharacters:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _has_nul_query(request) or _has_nul_body(request):
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": REFUSED}, status=400)
            return HttpResponse(REFUSED, status=400, content_type="text/plain")
        return self.get_response(request)
