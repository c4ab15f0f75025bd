"""API tokens: created (the raw token shown once, only its sha256 stored) with an expiry,
revoked, and checked on each request.

Every token expires: FORESIGHT_TOKEN_DEFAULT_DAYS after its creation unless its creator
asks for fewer or more days, never more than FORESIGHT_TOKEN_MAX_DAYS."""
from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from ..models import ApiToken
from .actors import Actor
from .audit import audit_record
from .errors import NotAllowed, ServiceError

log = logging.getLogger("trading.services")

TOKEN_TOUCH_EVERY_S = 60.0  # last_used_at is refreshed at most this often (a write per request is waste)
TOKEN_PREFIX = "fst"


class TokenRefused(ServiceError):
    """A bearer token the API does not accept; the message says why (401)."""

    status_code = 401


def _token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def token_lifetime_days(days: int | None) -> int:
    """The lifetime a new token gets: ``days``, or the default; refused past the maximum."""
    longest = int(settings.FORESIGHT_TOKEN_MAX_DAYS)
    if days is None:
        return int(settings.FORESIGHT_TOKEN_DEFAULT_DAYS)
    if not isinstance(days, int) or isinstance(days, bool) or days < 1 or days > longest:
        raise ServiceError(f"a token lasts from 1 to {longest} days", errors={"expires_in_days": f"1 to {longest}"})
    return days


@transaction.atomic
def token_create(*, user, name: str, actor: Actor | None = None, expires_in_days: int | None = None,
                 ) -> tuple[ApiToken, str]:
    """A new API token for ``user``: the raw ``fst_<prefix>_<secret>`` is returned once; only
    its sha256 is stored. It expires after ``expires_in_days`` (default and maximum from the
    settings)."""
    name = (name or "").strip()
    if not name:
        raise ServiceError("a token needs a name", errors={"name": "required"})
    if len(name) > 100:
        raise ServiceError("a token name is at most 100 characters", errors={"name": "too long"})
    days = token_lifetime_days(expires_in_days)
    prefix = secrets.token_hex(4)
    raw = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    now = timezone.now()
    token = ApiToken.objects.create(user=user, name=name, prefix=prefix, token_hash=_token_hash(raw),
                                    created_at=now, expires_at=now + timedelta(days=days))
    actor = actor or Actor(name=user.get_username(), source="system", user=user)
    audit_record(action="token.created", actor=actor, outcome="ok",
                 payload={"token_id": token.pk, "name": name, "prefix": prefix, "for": user.get_username(),
                          "expires_at": token.expires_at.isoformat()})
    return token, raw


@transaction.atomic
def token_revoke(*, token: ApiToken, actor: Actor) -> None:
    """Revoke a token: its owner or a superuser (or the CLI) may."""
    if actor.user is not None:
        if actor.user.pk != token.user_id and not actor.user.is_superuser:
            raise NotAllowed("you may revoke only your own tokens")
    elif actor.source not in ("cli", "system"):
        raise NotAllowed("revoking a token needs a logged-in user")
    if token.revoked_at is not None:
        return
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit_record(action="token.revoked", actor=actor, outcome="ok",
                 payload={"token_id": token.pk, "name": token.name, "prefix": token.prefix,
                          "for": token.user.get_username()})


@dataclass(frozen=True)
class TokensRevoked:
    """What :func:`tokens_revoke` did, each list in the tokens' order."""

    revoked: list[ApiToken]
    refused: list[tuple[ApiToken, ServiceError]]  # left as they were


@transaction.atomic
def tokens_revoke(*, tokens: Iterable[ApiToken], actor: Actor) -> TokensRevoked:
    """Revoke each token not revoked yet (:func:`token_revoke`); one the actor may not revoke
    is refused without stopping the others."""
    revoked: list[ApiToken] = []
    refused: list[tuple[ApiToken, ServiceError]] = []
    for token in tokens:
        if token.revoked_at is not None:
            continue  # neither counted nor refused: there is nothing left to revoke
        try:
            token_revoke(token=token, actor=actor)
        except ServiceError as exc:
            refused.append((token, exc))
        else:
            revoked.append(token)
    return TokensRevoked(revoked=revoked, refused=refused)


def token_authenticate(raw: str):
    """The active user a raw token belongs to, or None (unknown, malformed, revoked or expired)."""
    try:
        return token_verify(raw)
    except TokenRefused:
        return None


def token_verify(raw: str):
    """The active user a raw token belongs to; :class:`TokenRefused` saying why not."""
    if not raw or not isinstance(raw, str) or len(raw) > 200:
        raise TokenRefused("invalid API token")
    parts = raw.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise TokenRefused("invalid API token (expected fst_<prefix>_<secret>)")
    token = ApiToken.objects.select_related("user").filter(token_hash=_token_hash(raw.strip()),
                                                           prefix=parts[1]).first()
    if token is None:
        raise TokenRefused("invalid API token")
    now = timezone.now()
    if token.revoked_at is not None:
        raise TokenRefused(f"API token {token.prefix}… was revoked")
    if token.is_expired(now):
        raise TokenRefused(f"API token {token.prefix}… expired on {token.expires_at:%Y-%m-%d %H:%M} UTC: "
                           "create a new one (admin → API tokens)")
    if not token.user.is_active:
        raise TokenRefused(f"API token {token.prefix}… belongs to a deactivated user")
    if token.last_used_at is None or token.last_used_at < now - timedelta(seconds=TOKEN_TOUCH_EVERY_S):
        try:
            with transaction.atomic():
                ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        except DatabaseError as exc:  # a locked database must not lock people out of the halt
            log.warning("token %s: could not update last_used_at: %s", token.prefix, exc)
    user = token.user
    user.api_token = token  # this request's user object only: Actor.from_request names the token in the audit
    return user
