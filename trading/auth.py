"""API authentication: Django sessions (CSRF enforced) and per-user bearer tokens.

Both return the user; ``request.auth`` is that user in every endpoint.

A bearer token that is unknown, revoked or expired is refused with 401 and a detail that says
which, and counted against the client's address (services/auth_failures.py). Past
FORESIGHT_BAD_TOKEN_LIMIT bad tokens in a window, every bearer token from that address is
answered 429 before it is looked up, so guessing stops paying. Token-authenticated calls are
throttled per token owner by ninja's AuthRateThrottle (FORESIGHT_API_RATE, foresight_site/api.py).
"""
from __future__ import annotations

import logging

from django.conf import settings
from ninja.errors import Throttled
from ninja.security import HttpBearer, SessionAuth
from ninja.throttling import AuthRateThrottle

from .client_ip import client_ip
from .models import AuthFailure
from .services.auth_failures import auth_failure_count, auth_failures_in_window
from .services.tokens import TokenRefused, token_verify

log = logging.getLogger("trading.auth")


class TokenAuth(HttpBearer):
    """``Authorization: Bearer fst_<prefix>_<secret>`` (tokens from POST /api/tokens or the admin)."""

    def authenticate(self, request, token: str):
        source = client_ip(request)
        limit = settings.FORESIGHT_BAD_TOKEN_LIMIT
        if auth_failures_in_window(kind=AuthFailure.KIND_TOKEN, source=source) >= limit:
            auth_failure_count(kind=AuthFailure.KIND_TOKEN, source=source, detail=_prefix_of(token))
            raise Throttled(wait=settings.FORESIGHT_AUTH_WINDOW_S)
        try:
            user = token_verify(token)
        except TokenRefused:
            auth_failure_count(kind=AuthFailure.KIND_TOKEN, source=source, detail=_prefix_of(token))
            raise  # 401 with the reason (foresight_site/api.py's ServiceError handler)
        request.user = user  # so Actor.from_request and has_perm see the same user
        request.throttle_ident = f"token-{_prefix_of(token)}"  # TokenRateThrottle counts token calls only
        return user


def _prefix_of(token: str) -> str:
    """What of a bad token may be recorded: its public prefix, never the secret."""
    parts = (token or "").split("_", 2)
    return f"{parts[0]}_{parts[1][:12]}" if len(parts) == 3 else "(malformed)"


class TokenRateThrottle(AuthRateThrottle):
    """ninja's AuthRateThrottle at FORESIGHT_API_RATE, per token, for token-authenticated calls
    only: the admin's session is an operator at a screen, not a script. The cache being down
    (Redis) lets calls through rather than refusing a halt."""

    def __init__(self) -> None:
        super().__init__(settings.FORESIGHT_API_RATE)

    def get_cache_key(self, request):
        ident = getattr(request, "throttle_ident", None)
        if ident is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def get_ident(self, request):
        return client_ip(request)

    def allow_request(self, request) -> bool:
        if request.method == "POST" and request.path.rstrip("/").endswith("/halt"):
            return True  # a halt never waits on a quota: the script that spent it may be why we halt
        try:
            self.num_requests, self.duration = self.parse_rate(settings.FORESIGHT_API_RATE)
            return super().allow_request(request)
        except Exception as exc:  # noqa: BLE001 - a throttle must never be why the API is down
            log.warning("API throttle unavailable (%s): call allowed", exc)
            return True


class ConsoleSessionAuth(SessionAuth):
    """The admin's session cookie, with Django's CSRF check on unsafe methods.

    The CSRF check runs only for a logged-in session: a request with no session carries no
    ambient authority to forge, and must get a plain 401, not a CSRF 403."""

    def _get_key(self, request):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        return super()._get_key(request)

    def authenticate(self, request, key):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return user
        return None


token_auth = TokenAuth()
session_auth = ConsoleSessionAuth(csrf=True)

# Token first: a request that brings a token is not a browser session and needs no CSRF token.
API_AUTH = [token_auth, session_auth]
