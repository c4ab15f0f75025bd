"""API authentication: Django sessions (CSRF enforced) and per-user bearer tokens.

Both return the user; ``request.auth`` is that user in every endpoint.
"""
from __future__ import annotations

from ninja.security import HttpBearer, SessionAuth

from . import services


class TokenAuth(HttpBearer):
    """``Authorization: Bearer fst_<prefix>_<secret>`` (tokens from POST /api/tokens or the admin)."""

    def authenticate(self, request, token: str):
        user = services.token_authenticate(token)
        if user is not None:
            request.user = user  # so Actor.from_request and has_perm see the same user
        return user


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
