"""Issue 13, items 4 and 7: login lockout with the real client address (django-axes), bad
tokens braked and counted per source and window, token calls throttled (ninja), tokens that
expire, JSON 413 for an oversized body."""
from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from trading import services
from trading.models import ApiToken, AuditEvent, AuthFailure
from trading.services.auth_failures import auth_failure_count, auth_window_start

pytestmark = pytest.mark.django_db

PASSWORD = "the-right-password-42"
PROXY = "127.0.0.1"


@pytest.fixture(autouse=True)
def fast_hashes_and_fresh_counters(settings):
    # 40 logins with the default PBKDF2 cost would take most of a minute on a shared machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()  # ninja's throttle history
    yield
    cache.clear()


@pytest.fixture
def behind_proxy(settings):
    settings.FORESIGHT_TRUSTED_PROXIES = [PROXY]


def _login(client: Client, username: str, password: str, *, peer: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": peer}
    if forwarded:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password}, **extra)


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# --------------------------------------------------------------------- login lockout


def test_forty_wrong_passwords_lock_out_the_real_client_and_the_right_one_is_refused(behind_proxy):
    User.objects.create_user("olga", password=PASSWORD, is_staff=True)
    attacker = Client()
    for i in range(40):
        # The proxy appends the address it saw; what the client wrote to its left is not believed.
        _login(attacker, "olga", f"guess-{i}", peer=PROXY, forwarded=f"10.66.{i}.1, 203.0.113.7")
    response = _login(attacker, "olga", PASSWORD, peer=PROXY, forwarded="203.0.113.7")
    assert response.status_code == 429 and not _logged_in(attacker)

    [attempt] = AccessAttempt.objects.all()
    assert (attempt.ip_address, attempt.username) == ("203.0.113.7", "olga")  # not the proxy's 127.0.0.1
    # The lockout is of that client: olga at another address, through the same proxy, logs in.
    colleague = Client()
    response = _login(colleague, "olga", PASSWORD, peer=PROXY, forwarded="198.51.100.20")
    assert response.status_code == 302 and _logged_in(colleague)

    # Counted, not a row per attempt: one failure row for the source, one lockout audited.
    [failures] = AuthFailure.objects.filter(kind="login")
    assert (failures.source, failures.count, failures.last_detail) == ("203.0.113.7", 41, "olga")
    [locked] = AuditEvent.objects.filter(action="login.locked_out")
    assert (locked.actor, locked.ip, locked.source) == ("olga", "203.0.113.7", "admin")
    assert not AuditEvent.objects.filter(action="login.failed").exists()


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(settings):
    settings.FORESIGHT_TRUSTED_PROXIES = [PROXY]
    User.objects.create_user("olga", password=PASSWORD, is_staff=True)
    attacker = Client()
    # A client that reaches the console directly cannot pick a fresh address per attempt.
    for i in range(settings.AXES_FAILURE_LIMIT):
        _login(attacker, "olga", "wrong", peer="192.0.2.5", forwarded=f"203.0.113.{i}")
    assert _login(attacker, "olga", PASSWORD, peer="192.0.2.5", forwarded="203.0.113.99").status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"192.0.2.5"}


def test_without_trusted_proxies_the_audit_ip_is_the_peer(client, django_user_model):
    user = django_user_model.objects.create_user("olga", password=PASSWORD, is_staff=True, is_superuser=True)
    client.force_login(user)
    client.post("/admin/trading/apitoken/add/", {"name": "ci"}, REMOTE_ADDR="192.0.2.8",
                HTTP_X_FORWARDED_FOR="203.0.113.1")
    assert AuditEvent.objects.get(action="token.created").ip == "192.0.2.8"


def test_behind_a_trusted_proxy_the_audit_ip_is_the_client(client, django_user_model, behind_proxy):
    user = django_user_model.objects.create_user("olga", password=PASSWORD, is_staff=True, is_superuser=True)
    client.force_login(user)
    client.post("/admin/trading/apitoken/add/", {"name": "ci"}, REMOTE_ADDR=PROXY,
                HTTP_X_FORWARDED_FOR="203.0.113.1")
    assert AuditEvent.objects.get(action="token.created").ip == "203.0.113.1"


# --------------------------------------------------------------------- bounded failure counts


def test_the_failure_table_grows_by_one_row_per_source_and_window_however_many_attempts(settings):
    settings.FORESIGHT_BAD_TOKEN_LIMIT = 1000
    attacker = Client(REMOTE_ADDR="192.0.2.44")
    for i in range(60):
        # Other usernames and user agents each time: still the same source.
        attacker.post("/admin/login/", {"username": f"user{i}", "password": "x"}, HTTP_USER_AGENT=f"bot/{i}")
        attacker.get("/api/tokens", HTTP_AUTHORIZATION=f"Bearer fst_{i:08x}_{'x' * 40}")
    rows = sorted(AuthFailure.objects.values_list("kind", "source", "count"))
    assert rows == [("login", "192.0.2.44", 60), ("token", "192.0.2.44", 60)]
    assert not AuditEvent.objects.filter(action__startswith="login.").exists()

    # A new window starts a new row; the same window adds to its row.
    now = timezone.now()
    later = now + timedelta(seconds=settings.FORESIGHT_AUTH_WINDOW_S)
    assert auth_window_start(later) != auth_window_start(now)
    assert auth_failure_count(kind="login", source="192.0.2.44", now=later) == 1
    assert auth_failure_count(kind="login", source="192.0.2.44", now=later) == 2
    assert AuthFailure.objects.filter(kind="login", source="192.0.2.44").count() == 2


# --------------------------------------------------------------------- bearer tokens


def test_bad_tokens_beyond_the_limit_get_429_json_even_a_good_one(settings):
    settings.FORESIGHT_BAD_TOKEN_LIMIT = 5
    token, good = services.token_create(user=User.objects.create_user("tom"), name="ci")
    guesser = Client(REMOTE_ADDR="192.0.2.50")
    for i in range(5):
        response = guesser.get("/api/tokens", HTTP_AUTHORIZATION=f"Bearer fst_deadbeef_guess{i}")
        assert response.status_code == 401 and response.json() == {"detail": "invalid API token"}
    for raw in ("fst_deadbeef_guess5", good):  # past the limit the token is not even looked up
        response = guesser.get("/api/tokens", HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert response.status_code == 429 and response["Content-Type"].startswith("application/json")
        assert "too many" in response.json()["detail"] and int(response["Retry-After"]) >= 1
    # Another address is not braked by this one.
    assert Client(REMOTE_ADDR="192.0.2.51").get("/api/tokens", HTTP_AUTHORIZATION=f"Bearer {good}").status_code == 200
    [row] = AuthFailure.objects.filter(kind="token")
    # Every refusal counted, the good token's too (only its public prefix is kept).
    assert (row.source, row.count, row.last_detail) == ("192.0.2.50", 7, f"fst_{token.prefix}")


def test_an_expired_or_revoked_token_is_refused_with_a_detail_that_says_so():
    tom = User.objects.create_user("tom")
    token, raw = services.token_create(user=tom, name="ci")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/tokens").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = client.get("/api/tokens")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert "expired on" in response.json()["detail"] and token.prefix in response.json()["detail"]
    assert services.token_authenticate(raw) is None

    other, raw_other = services.token_create(user=tom, name="laptop")
    services.token_revoke(token=other, actor=services.Actor.cli())
    response = Client(HTTP_AUTHORIZATION=f"Bearer {raw_other}").get("/api/tokens")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_tokens_expire_after_the_default_and_never_past_the_maximum(settings):
    settings.FORESIGHT_TOKEN_DEFAULT_DAYS, settings.FORESIGHT_TOKEN_MAX_DAYS = 30, 90
    tom = User.objects.create_user("tom")
    token, _ = services.token_create(user=tom, name="ci")
    assert timedelta(days=30) - timedelta(seconds=5) < token.expires_at - timezone.now() <= timedelta(days=30)
    week, _ = services.token_create(user=tom, name="week", expires_in_days=7)
    assert (week.expires_at - week.created_at) == timedelta(days=7)
    with pytest.raises(services.ServiceError, match="1 to 90 days"):
        services.token_create(user=tom, name="forever", expires_in_days=91)
    listed = Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(user=tom, name='x')[1]}").get("/api/tokens")
    assert all(item["expires_at"] for item in listed.json())


def test_token_calls_are_throttled_at_the_configured_rate_and_sessions_are_not(settings, django_user_model):
    settings.FORESIGHT_API_RATE = "3/m"
    user = django_user_model.objects.create_user("tom", is_staff=True)
    _token, raw = services.token_create(user=user, name="ci")
    script = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert [script.get("/api/tokens").status_code for _ in range(3)] == [200, 200, 200]
    response = script.get("/api/tokens")
    assert response.status_code == 429 and "too many" in response.json()["detail"]
    assert int(response["Retry-After"]) >= 1
    browser = Client()
    browser.force_login(user)
    assert {browser.get("/api/tokens").status_code for _ in range(5)} == {200}


def test_a_halt_is_never_throttled_even_when_the_tokens_quota_is_spent(settings, tmp_path):
    from trading.models import Kernel
    settings.FORESIGHT_API_RATE = "2/m"
    risk = User.objects.create_user("rita", is_superuser=True)
    _token, raw = services.token_create(user=risk, name="monitor")
    Kernel.objects.create(name="k9", state_dir=str(tmp_path))
    script = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert [script.get("/api/tokens").status_code for _ in range(3)] == [200, 200, 429]
    halted = script.post("/api/kernels/k9/halt", data={"reason": "runaway"}, content_type="application/json")
    assert halted.status_code == 202, halted.content
    assert AuditEvent.objects.filter(action="halt.engaged", kernel_name="k9").exists()
    assert script.get("/api/tokens").status_code == 429  # the quota still holds for everything else


# --------------------------------------------------------------------- oversized bodies


def test_a_3_mb_body_is_a_json_413(settings):
    _token, raw = services.token_create(user=User.objects.create_user("tom", is_superuser=True), name="ci")
    body = '{"reason": "' + "x" * (3 * 1024 * 1024) + '"}'
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = Client(HTTP_AUTHORIZATION=f"Bearer {raw}").post("/api/kernels/k1/halt", data=body,
                                                                 content_type="application/json")
    assert response.status_code == 413 and response["Content-Type"].startswith("application/json")
    assert "too large" in response.json()["detail"]
