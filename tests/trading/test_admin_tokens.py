"""API tokens in the admin: each user creates their own, sees it once, and revokes it."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

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


def test_a_viewer_sees_only_their_own_tokens_though_the_role_has_view_apitoken(login, admin_user, django_user_model):
    theirs, _ = services.token_create(user=admin_user, name="admin's grafana")
    client = login("Viewer")
    viewer = django_user_model.objects.get(username="viewer")
    assert viewer.has_perm("trading.view_apitoken")  # the role has it; it does not open others' tokens
    mine, _ = services.token_create(user=viewer, name="viewer's laptop")
    listing = client.get(reverse("admin:trading_apitoken_changelist")).content.decode()
    assert "viewer&#x27;s laptop" in listing and "admin&#x27;s grafana" not in listing
    assert client.get(reverse("admin:trading_apitoken_change", args=[theirs.pk])).status_code in (302, 403)
    assert client.get(reverse("admin:trading_apitoken_change", args=[mine.pk])).status_code == 200


def test_a_superuser_sees_every_token(admin_client, django_user_model):
    services.token_create(user=django_user_model.objects.create_user("tom"), name="tom's ci")
    assert "tom&#x27;s ci" in admin_client.get(reverse("admin:trading_apitoken_changelist")).content.decode()


def test_the_token_list_shows_the_expiry_and_the_form_sets_it(admin_client, settings):
    settings.FORESIGHT_TOKEN_MAX_DAYS = 90
    response = admin_client.post(reverse("admin:trading_apitoken_add"), {"name": "week", "expires_in_days": "7"})
    token = ApiToken.objects.get()
    assert token.expires_at - token.created_at == timedelta(days=7)
    assert "expires on" in texts(response)[0]
    listing = admin_client.get(reverse("admin:trading_apitoken_changelist")).content.decode()
    assert "column-expires_display" in listing
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(days=1))
    assert "expired " in admin_client.get(reverse("admin:trading_apitoken_changelist")).content.decode()
    refused = admin_client.post(reverse("admin:trading_apitoken_add"), {"name": "forever", "expires_in_days": "91"})
    assert refused.status_code == 200 and ApiToken.objects.count() == 1
