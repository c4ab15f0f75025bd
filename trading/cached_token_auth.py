"""Bearer tokens verified once per ``TOKEN_CACHE_S`` per web worker, for the endpoints polled
hard (GET /api/kernels/{name}): a dashboard at 1,000 req/s must not pay a token lookup, a
user load and a permission query on every call.

The bound: a token revoked or expired, a user deactivated or a permission withdrawn is
refused by every worker at most ``TOKEN_CACHE_S`` seconds later (in the worker that saved
the change, at once: a save of the token or of the user drops the entries concerned). The
brake on bad tokens (trading/auth.py) runs before every lookup, as before; a token found
here was verified in this worker seconds ago, is no guess, and skips the brake's query (it is
what costs most in a call). Only a verified token is cached: a refused one is braked, looked
up and counted every time.
"""
from __future__ import annotations

import hashlib
import threading
import time

from django.contrib.auth import get_user_model
from django.db.models.signals import post_save

from .auth import TokenAuth, _prefix_of, session_auth
from .models import ApiToken

TOKEN_CACHE_S = 5.0

# sha256(raw token) -> (monotonic deadline, user, token pk, user pk)
_verified: dict[str, tuple[float, object, int, int]] = {}
_lock = threading.Lock()


def _key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _cached_user(raw: str):
    entry = _verified.get(_key(raw))
    if entry is None or entry[0] <= time.monotonic():
        return None
    return entry[1]


def _remember(raw: str, user) -> None:
    token = getattr(user, "api_token", None)
    deadline = time.monotonic() + TOKEN_CACHE_S
    expires_at = getattr(token, "expires_at", None)
    if expires_at is not None:  # never past the token's own expiry
        deadline = min(deadline, time.monotonic() + max(0.0, expires_at.timestamp() - time.time()))
    with _lock:
        _verified[_key(raw)] = (deadline, user, getattr(token, "pk", 0), user.pk)
        if len(_verified) > 10_000:  # only verified tokens get here; drop the expired ones
            now = time.monotonic()
            for k in [k for k, e in _verified.items() if e[0] <= now]:
                _verified.pop(k, None)


def token_cache_forget(*, token_pk: int | None = None, user_pk: int | None = None) -> None:
    """Drop this worker's entries of a token or of a user's tokens (on their save)."""
    with _lock:
        for k in [k for k, e in _verified.items() if e[2] == token_pk or e[3] == user_pk]:
            _verified.pop(k, None)


def _token_saved(sender, instance, **kwargs) -> None:
    token_cache_forget(token_pk=instance.pk)


def _user_saved(sender, instance, **kwargs) -> None:
    token_cache_forget(user_pk=instance.pk)


post_save.connect(_token_saved, sender=ApiToken, dispatch_uid="cached_token_auth.token")
post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="cached_token_auth.user")


class CachedTokenAuth(TokenAuth):
    """:class:`trading.auth.TokenAuth` with the verified token remembered for ``TOKEN_CACHE_S``."""

    def authenticate(self, request, token: str):
        user = _cached_user(token or "")
        if user is None:
            user = super().authenticate(request, token)
            _remember(token, user)
            return user
        request.user = user
        request.throttle_ident = f"token-{_prefix_of(token)}"  # as TokenAuth: one quota per token
        return user


# Token first, as API_AUTH: a request that brings a token is not a browser session.
CACHED_API_AUTH = [CachedTokenAuth(), session_auth]
