"""The Ninja API: authentication (session with CSRF, tokens), error shapes, the audit log's
read-only surface, command answers. Permissions by role are in test_api_roles.py; the
API against a running kernel is in tests/integration/test_console_kernel.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from trading import services
from trading.models import ApiToken, AuditEvent, AuthFailure, ControlCommand, Kernel, Slot
from tests.support.status_reader import read_control as control_json

pytestmark = pytest.mark.django_db


@pytest.fixture
def spool(tmp_path, settings) -> Path:
    settings.FORESIGHT_AUDIT_SPOOL = str(tmp_path / "audit-spool.jsonl")
    return tmp_path / "audit-spool.jsonl"


@pytest.fixture
def kernel(tmp_path, spool) -> Kernel:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    kernel = Kernel.objects.create(name="k1", state_dir=str(state_dir), state="running")
    Slot.objects.create(kernel=kernel, slot_id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="ema_cross",
                        params={"fast": 12, "slow": 26})
    return kernel


def _user(name: str, group: str | None) -> User:
    user = User.objects.create_user(name, password="a-long-password-1")
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def operator() -> User:
    return _user("olga", "Operator")


@pytest.fixture
def risk() -> User:
    return _user("rita", "Risk")


def _control(kernel: Kernel) -> dict:
    return control_json(kernel.state_dir)


# ===================================================================== session auth and CSRF


def test_session_post_without_csrf_token_is_refused(kernel, operator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)

    response = client.post("/api/kernels/k1/pause", content_type="application/json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not ControlCommand.objects.exists()
    assert not Path(kernel.state_dir, "control.json").exists()


def test_session_post_with_csrf_token_is_accepted(kernel, operator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    client.get("/admin/login/")  # any page that renders a form sets the CSRF cookie
    token = client.cookies["csrftoken"].value

    response = client.post("/api/kernels/k1/pause", content_type="application/json", HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"  # delivery runs on commit (the test never commits)


def test_session_get_needs_no_csrf_token(kernel, operator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.get("/api/kernels").status_code == 200


def test_anonymous_gets_401_not_a_csrf_error():
    client = Client(enforce_csrf_checks=True)
    response = client.post("/api/kernels/k1/halt", data={"reason": "x"}, content_type="application/json")
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}


# ===================================================================== tokens


def test_token_created_over_session_works_as_bearer_without_csrf(kernel, operator):
    session = Client(enforce_csrf_checks=True)
    session.force_login(operator)
    session.get("/admin/login/")
    csrf = session.cookies["csrftoken"].value

    created = session.post("/api/tokens", data={"name": "laptop"}, content_type="application/json",
                           HTTP_X_CSRFTOKEN=csrf)

    assert created.status_code == 201, created.content
    body = created.json()
    raw = body["token"]
    assert raw.startswith(f"fst_{body['prefix']}_")
    stored = ApiToken.objects.get(pk=body["id"])
    assert raw not in (stored.token_hash, stored.prefix) and len(stored.token_hash) == 64
    bearer = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = bearer.post("/api/kernels/k1/pause", content_type="application/json")
    assert response.status_code == 202, response.content
    command = ControlCommand.objects.get(command_id=response.json()["command_id"])
    assert (command.actor, command.source, command.user) == ("olga", "api", operator)
    assert bearer.get("/api/tokens").json()[0]["name"] == "laptop"
    assert "token" not in bearer.get("/api/tokens").json()[0]


def test_tokens_cannot_be_created_with_a_token(operator):
    _, raw = services.token_create(user=operator, name="first")
    response = Client(HTTP_AUTHORIZATION=f"Bearer {raw}").post(
        "/api/tokens", data={"name": "second"}, content_type="application/json")
    assert response.status_code == 401
    assert ApiToken.objects.count() == 1


def test_revoked_token_is_refused(kernel, operator):
    token, raw = services.token_create(user=operator, name="laptop")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/kernels").status_code == 200

    assert client.delete(f"/api/tokens/{token.pk}").status_code == 204

    assert client.get("/api/kernels").status_code == 401
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.filter(action="token.revoked", actor="olga").count() == 1


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer fst_abc_def", "Bearer ", "Token x", "Bearer fst_" + "x" * 300])
def test_bad_tokens_are_401(header):
    assert Client(HTTP_AUTHORIZATION=header).get("/api/kernels").status_code == 401


def test_a_user_cannot_revoke_someone_elses_token(operator, risk):
    theirs, _ = services.token_create(user=risk, name="rita's")
    client = Client()
    client.force_login(operator)
    assert client.delete(f"/api/tokens/{theirs.pk}").status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_token_of_an_inactive_user_is_refused(operator):
    _, raw = services.token_create(user=operator, name="laptop")
    operator.is_active = False
    operator.save()
    assert Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/kernels").status_code == 401


# ===================================================================== errors


def test_errors_are_json_with_detail(kernel, operator, risk):
    client = Client()
    client.force_login(operator)
    assert client.get("/api/kernels/nope").json() == {"detail": "no kernel named 'nope'"}
    assert client.get("/api/kernels/nope").status_code == 404
    assert client.post("/api/kernels/k1/slots/eth-5m/pause").status_code == 404
    assert client.get("/api/commands/c-unknown").status_code == 404
    response = client.post("/api/kernels/k1/release", content_type="application/json")
    assert response.status_code == 403  # operators may not release, whatever the kernel's state

    client.force_login(risk)
    response = client.post("/api/kernels/k1/release", content_type="application/json")
    assert response.status_code == 409
    assert "not halted" in response.json()["detail"]

    response = client.post("/api/kernels/k1/halt", data={"reason": ""}, content_type="application/json")
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str) and "reason" in response.json()["detail"]

    response = client.post("/api/kernels/k1/pause?wait=31", content_type="application/json")
    assert response.status_code == 422


def test_slot_config_validation_errors_are_400_with_the_field(kernel, risk):
    client = Client()
    client.force_login(risk)

    response = client.patch("/api/kernels/k1/slots/btc-5m/config", data={"params": {"fast": 30, "slow": 20}},
                            content_type="application/json")
    assert response.status_code == 400
    assert "fast (30) must be smaller than slow (20)" in response.json()["detail"]

    response = client.patch("/api/kernels/k1/slots/btc-5m/config", data={"timeframe": "7m"},
                            content_type="application/json")
    assert response.status_code == 400
    assert "timeframe" in response.json()["errors"]

    response = client.patch("/api/kernels/k1/slots/btc-5m/config", data={"colour": "red"},
                            content_type="application/json")
    assert response.status_code == 422  # not a field of the schema at all

    assert Slot.objects.get(slot_id="btc-5m").timeframe == "5m"
    assert not ControlCommand.objects.exists()


def test_slot_config_patch_sends_the_whole_config(kernel, risk, django_capture_on_commit_callbacks):
    client = Client()
    client.force_login(risk)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.patch("/api/kernels/k1/slots/btc-5m/config",
                                data={"order_notional": 50.0, "params": {"fast": 9, "slow": 21}},
                                content_type="application/json")
    assert response.status_code == 202, response.content
    sent = _control(kernel)["commands"][0]
    assert sent["action"] == "slot.configure" and sent["slot"] == "btc-5m"
    assert sent["args"]["order_notional"] == 50.0 and sent["args"]["params"] == {"fast": 9, "slow": 21}
    assert sent["args"]["symbol"] == "BTC/USDT" and "id" not in sent["args"]
    change = AuditEvent.objects.get(action="config.changed")
    assert change.payload["before"]["order_notional"] == 100.0
    assert change.payload["after"]["order_notional"] == 50.0
    assert change.payload["changed"] == ["order_notional", "params"]


# ===================================================================== the audit log is append-only


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
@pytest.mark.parametrize("path", ["/api/audit", "/api/audit/{id}"])
def test_audit_events_cannot_be_changed_through_the_api(operator, method, path):
    event = services.audit_record(action="test.event", actor=services.Actor.system(), payload={"x": 1})
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))

    response = getattr(client, method)(path.format(id=event.pk), data={"action": "forged"},
                                       content_type="application/json")

    assert response.status_code == 405
    event.refresh_from_db()
    assert (event.action, event.payload) == ("test.event", {"x": 1})


def test_audit_list_filters_and_pages(operator, kernel):
    for i in range(5):
        services.audit_record(action="command.issued", actor=services.Actor.cli(), kernel=kernel,
                              slot_id="btc-5m" if i % 2 else "", command_id=f"c{i}")
    services.audit_record(action="halt.engaged", actor=services.Actor.cli(), kernel=kernel)
    client = Client()
    client.force_login(operator)

    page = client.get("/api/audit", {"action": "command.issued", "limit": 2, "offset": 1}).json()
    assert page["count"] == 5 and len(page["items"]) == 2 and page["offset"] == 1
    assert client.get("/api/audit", {"slot": "btc-5m"}).json()["count"] == 2
    assert client.get("/api/audit", {"action": "halt.*"}).json()["count"] == 1
    assert client.get("/api/audit", {"kernel": "other"}).json()["count"] == 0
    assert client.get("/api/audit", {"since": "2999-01-01T00:00:00Z"}).json()["count"] == 0
    assert client.get("/api/audit", {"until": "2000-01-01T00:00:00"}).json()["count"] == 0
    assert client.get("/api/audit", {"offset": 10**12}).status_code == 422


# ===================================================================== commands


def test_command_answers_202_and_can_be_polled(kernel, operator, django_capture_on_commit_callbacks):
    client = Client()
    client.force_login(operator)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/kernels/k1/reload", data={"strategy": "ema_cross"},
                               content_type="application/json")
    assert response.status_code == 202
    body = response.json()
    assert body["action"] == "reload" and body["audit"] == "recorded"
    assert _control(kernel)["commands"][0] == {
        "id": body["command_id"], "action": "reload", "args": {"strategy": "ema_cross"}, "issued_by": "olga",
        "issued_at": _control(kernel)["commands"][0]["issued_at"]}
    polled = client.get(f"/api/commands/{body['command_id']}").json()
    assert polled["status"] == "delivered" and polled["kernel"] == "k1"


def test_wait_returns_at_the_timeout_when_the_kernel_does_not_answer(kernel, operator):
    client = Client()
    client.force_login(operator)
    response = client.post("/api/kernels/k1/pause?wait=0.3", content_type="application/json")
    assert response.status_code == 202
    assert response.json()["status"] in ("pending", "delivered")


def test_halt_through_the_api_is_written_first(kernel, operator):
    client = Client()
    client.force_login(operator)
    response = client.post("/api/kernels/k1/halt", data={"reason": "runaway"}, content_type="application/json")
    assert response.status_code == 202
    halt = _control(kernel)["halt"]
    assert (halt["reason"], halt["by"]) == ("runaway", "olga")
    assert response.json()["status"] == "delivered"
    assert AuditEvent.objects.filter(action="halt.engaged", command_id=response.json()["command_id"]).count() == 1


def test_failed_login_is_counted_not_audited_row_by_row(client):
    # Issue 13: an audit row per failed login let anyone grow the table; failures are counted
    # per source and window instead (tests/trading/test_auth_hardening.py has the lockout).
    User.objects.create_user("mallory", password="the-right-password")
    response = client.post("/admin/login/", {"username": "mallory", "password": "wrong"}, REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 200  # the form again
    assert not AuditEvent.objects.filter(action__startswith="login.").exists()
    failure = AuthFailure.objects.get(kind="login")
    assert (failure.source, failure.count, failure.last_detail) == ("10.1.2.3", 1, "mallory")
    assert "wrong" not in json.dumps(list(AuthFailure.objects.values()), default=str)


def test_openapi_and_docs_are_served(client):
    schema = client.get("/api/openapi.json").json()
    assert "/api/kernels/{name}/halt" in schema["paths"]
    assert client.get("/api/docs").status_code == 200
