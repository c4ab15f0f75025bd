"""trading.services.tokens: only a hash is stored, a revoked token stops working."""
from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User

from trading import services
from trading.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db


def test_tokens_store_only_a_hash_and_revoked_ones_stop_working():
    user = User.objects.create_user("tom")
    token, raw = services.token_create(user=user, name="ci")
    assert raw.startswith(f"fst_{token.prefix}_") and raw not in json.dumps(list(ApiToken.objects.values()),
                                                                           default=str)
    assert services.token_authenticate(raw) == user
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert services.token_authenticate(raw + "x") is None
    with pytest.raises(services.NotAllowed):
        services.token_revoke(token=token, actor=services.Actor(name="eve", source="api",
                                                                user=User.objects.create_user("eve")))
    services.token_revoke(token=token, actor=services.Actor(name="tom", source="api", user=user))
    assert services.token_authenticate(raw) is None


def test_tokens_revoke_revokes_what_the_actor_may_and_returns_the_rest():
    tom, eve = User.objects.create_user("tom"), User.objects.create_user("eve")
    ci, raw_ci = services.token_create(user=tom, name="ci")
    laptop, raw_laptop = services.token_create(user=tom, name="laptop")
    old, _ = services.token_create(user=tom, name="old")
    services.token_revoke(token=old, actor=services.Actor.cli())
    theirs, raw_theirs = services.token_create(user=eve, name="eve's")
    actor = services.Actor(name="tom", source="admin", user=tom)

    done = services.tokens_revoke(tokens=ApiToken.objects.order_by("pk"), actor=actor)

    assert done.revoked == [ci, laptop]  # the one revoked already is neither counted nor refused
    [(token, error)] = done.refused
    assert token == theirs and isinstance(error, services.NotAllowed) and "only your own" in str(error)
    assert services.token_authenticate(raw_ci) is None and services.token_authenticate(raw_laptop) is None
    assert services.token_authenticate(raw_theirs) == eve
    revoked = AuditEvent.objects.filter(action="token.revoked").order_by("pk")
    assert [(e.actor, e.payload["name"]) for e in revoked] == [
        (services.Actor.cli().name, "old"), ("tom", "ci"), ("tom", "laptop")]
