"""API tokens in the admin: each user creates their own, sees it once, and revokes it."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.trading.admin_fixtures import (  # noqa: F401 (fixtures)
    login, no_kernel_to_wait_for, texts,
)
from trading import services
from trading.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db


# --------------------------------------------------------------------- API tokens


@pytest.mark.parametrize("role", ["Viewer", "Risk"])
def test_a_user_creates_a_token_for_themself_and_sees_it_once(login, django_user_model, role):
    client = login(role)
    user = django_user_model.objects.get(username=role.lower())
    response = client.post(reverse("admin:trading_apitoken_add"), {"name": "laptop cli"}, follow=True)
    assert response.redirect_chain == [(reverse("admin:trading_apitoken_changelist"), 302)]
    token = ApiToken.objects.get()
    assert token.user == user and token.name == "laptop cli"
    [raw] = re.findall(r"<code>(fst_[^<]+)</code>", response.content.decode())
    assert services.token_authenticate(raw) == user
    listing = client.get(reverse("admin:trading_apitoken_changelist")).content.decode()
    assert "laptop cli" in listing
    assert token.token_hash not in listing and raw not in listing  # shown once, the hash never
    detail = client.get(reverse("admin:trading_apitoken_change", args=[token.pk])).content.decode()
    assert token.token_hash not in detail
    client.post(reverse("admin:trading_apitoken_changelist"), {"action": "revoke_tokens", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None and services.token_authenticate(raw) is None


def test_a_superuser_creates_and_revokes_a_token(admin_client, admin_user):
    response = admin_client.post(reverse("admin:trading_apitoken_add"), {"name": "grafana"})
    token = ApiToken.objects.get()
    assert token.user == admin_user
    assert "not shown again" in texts(response)[0]
    assert AuditEvent.objects.filter(action="token.created").exists()
    admin_client.post(reverse("admin:trading_apitoken_changelist"),
                      {"action": "revoke_tokens", "_selected_action": [token.pk]})
    assert AuditEvent.objects.filter(action="token.revoked").exists()


def test_users_see_only_their_own_tokens_and_revoke_only_their_own(login, admin_user):
    theirs, _ = services.token_create(user=admin_user, name="admin's")
    client = login(None)  # staff, no group: no view_apitoken
    assert "admin&#x27;s" not in client.get(reverse("admin:trading_apitoken_changelist")).content.decode()
    assert client.get(reverse("admin:trading_apitoken_change", args=[theirs.pk])).status_code in (302, 403)
    client.post(reverse("admin:trading_apitoken_changelist"),
                {"action": "revoke_tokens", "_selected_action": [theirs.pk]})
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
