"""Every API endpoint × every role: exactly the permitted ones succeed.

The table below is the contract: endpoint → the permission it needs (the admin's, from
services.required_permission, or the model's view permission for reads). Roles are the
groups the data migration creates (Viewer, Operator, Risk), plus anonymous and a superuser.
Each case runs once with the session (as the admin's browser does) and once with a token.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tests.trading.release_fixtures import V1, V2, canary_entry, store_version
from trading import services
from trading.models import AuditEvent, ControlCommand, Kernel, Slot

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "viewer", "operator", "risk", "superuser")
ROLE_GROUP = {"viewer": "Viewer", "operator": "Operator", "risk": "Risk"}

# (method, path, JSON body, permission codename). {cmd} and {event} are filled in per test.
ENDPOINTS = [
    ("get", "/api/kernels", None, "view_kernel"),
    ("get", "/api/kernels/k1", None, "view_kernel"),
    ("post", "/api/kernels/k1/start", None, "operate_kernel"),
    ("post", "/api/kernels/k1/stop", None, "operate_kernel"),
    ("post", "/api/kernels/k1/pause", None, "operate_kernel"),
    ("post", "/api/kernels/k1/resume", None, "operate_kernel"),
    ("post", "/api/kernels/k1/reload", {"strategy": "ema_cross"}, "operate_kernel"),
    ("post", "/api/kernels/k1/rollback", {"strategy": "ema_cross"}, "rollback_strategy"),
    ("post", "/api/kernels/k1/halt", {"reason": "role test"}, "engage_halt"),
    ("post", "/api/kernels/halted/release", None, "release_halt"),
    ("get", "/api/kernels/k1/slots", None, "view_slot"),
    ("get", "/api/kernels/k1/slots/btc-5m", None, "view_slot"),
    ("patch", "/api/kernels/k1/slots/btc-5m/config", {"order_notional": 50.0}, "configure_slot"),
    ("post", "/api/kernels/k1/slots/btc-5m/pause", None, "operate_kernel"),
    ("post", "/api/kernels/k1/slots/btc-5m/resume", None, "operate_kernel"),
    ("post", "/api/kernels/k1/slots/btc-5m/flatten", None, "operate_kernel"),
    ("get", "/api/commands/{cmd}", None, "view_controlcommand"),
    ("get", "/api/audit", None, "view_auditevent"),
    ("get", "/api/audit/{event}", None, "view_auditevent"),
    # Releases (issue 11): Operator may canary and shadow; Risk rolls back, aborts, promotes, deploys the fleet.
    ("get", "/api/kernels/k1/strategies/ema_cross/versions", None, "view_kernel"),
    ("get", "/api/kernels/k1/strategies/ema_cross/diff?a=1&b=2", None, "view_kernel"),
    ("post", "/api/kernels/k1/strategies/ema_cross/rollback", {"reason": "role test", "version": 1},
     "rollback_strategy"),
    ("post", "/api/kernels/k1/strategies/ema_cross/canary", {"reason": "role test", "slots": ["btc-5m"]},
     "operate_kernel"),
    ("post", "/api/kernels/k1/strategies/ema_cross/shadow", {"reason": "role test"}, "operate_kernel"),
    ("post", "/api/kernels/k1/strategies/rsi_reversion/promote", {"reason": "role test"}, "promote_strategy"),
    ("post", "/api/kernels/k1/strategies/rsi_reversion/abort", {"reason": "role test"}, "rollback_strategy"),
    ("get", "/api/fleet/strategies", None, "view_kernel"),
    ("post", "/api/fleet/strategies/ema_cross/reload", {"reason": "role test"}, "deploy_fleet"),
    # Trading (issue 14): fills, positions, equity; slot.add needs what any slot configuration needs.
    ("get", "/api/kernels/k1/fills", None, "view_fill"),
    ("get", "/api/kernels/k1/positions", None, "view_slot"),
    ("get", "/api/kernels/k1/equity", None, "view_equitysample"),
    ("get", "/api/kernels/k1/report", None, "view_fill"),
    ("post", "/api/kernels/k1/slots", {"id": "sol-15m", "symbol": "SOL/USDT", "timeframe": "15m",
                                       "strategy": "ema_cross"}, "configure_slot"),
]


def test_the_table_covers_every_operation_of_the_schema(client):
    """A new endpoint must be added to the table above (tokens are per-user, tested in test_api)."""
    schema = client.get("/api/openapi.json").json()
    documented = {
        (method, path)
        for path, ops in schema["paths"].items()
        for method in ops
        if not path.startswith(("/api/tokens", "/api/health"))
    }
    table = {(m, p.split("?")[0].replace("k1", "{name}").replace("halted", "{name}").replace("btc-5m", "{slot_id}")
              .replace("{cmd}", "{command_id}").replace("{event}", "{event_id}")
              .replace("ema_cross", "{strategy}").replace("rsi_reversion", "{strategy}")) for m, p, _, _ in ENDPOINTS}
    assert documented == table


def test_each_endpoint_needs_what_the_admin_needs():
    """Command endpoints use exactly services.required_permission (the admin's source of truth)."""
    by_action = {"start": "/start", "stop": "/stop", "pause": "/pause", "resume": "/resume", "reload": "/reload",
                 "rollback": "/rollback", "halt": "/halt", "release": "/release", "slot.pause": "btc-5m/pause",
                 "slot.resume": "btc-5m/resume", "slot.flatten": "btc-5m/flatten", "slot.configure": "btc-5m/config",
                 "slot.add": "k1/slots"}
    for action, suffix in by_action.items():
        perm = next(p for m, path, _, p in ENDPOINTS if path.endswith(suffix) and m != "get")
        assert services.required_permission(action) == f"trading.{perm}", action


@pytest.fixture
def kernels(tmp_path) -> dict[str, Kernel]:
    """Two kernels known to the console; no process runs them (commands land in control.json).
    k1 has two stored versions of ema_cross, and a canary of rsi_reversion runs on it."""
    made = {}
    for name, halted in (("k1", False), ("halted", True)):
        state_dir = tmp_path / name
        state_dir.mkdir()
        status = {}
        if name == "k1":
            store_version(state_dir, "ema_cross", 1, V1)
            store_version(state_dir, "ema_cross", 2, V2)
            status = {"strategies": {"rsi_reversion": {"version": 1, "sha256": "b" * 64, "loaded_at": "",
                                                       "canary": canary_entry(2, "c" * 64, ["eth-5m"])}}}
        kernel = Kernel.objects.create(name=name, state_dir=str(state_dir), state="halted" if halted else "running",
                                       halt_engaged=halted, status=status)
        Slot.objects.create(kernel=kernel, slot_id="btc-5m", symbol="BTC/USDT", timeframe="5m",
                            strategy="ema_cross")
        made[name] = kernel
    return made


def _user(role: str) -> User | None:
    if role == "anonymous":
        return None
    if role == "superuser":
        return User.objects.create_superuser(role, f"{role}@example.com", None)
    user = User.objects.create_user(role)
    user.groups.add(Group.objects.get(name=ROLE_GROUP[role]))
    return user


def _allowed(role: str, perm: str) -> bool:
    if role == "anonymous":
        return False
    if role == "superuser":
        return True
    return perm in services.role_permissions()[ROLE_GROUP[role]]


@pytest.mark.parametrize("auth", ["session", "token"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method,path,body,perm", ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
def test_role_matrix(kernels, role, auth, method, path, body, perm):
    user = _user(role)
    command = ControlCommand.objects.create(command_id="c-role-test", kernel=kernels["k1"], action="pause",
                                            actor="someone", source="api")
    event = services.audit_record(action="test.event", actor=services.Actor.system())
    path = path.format(cmd=command.command_id, event=event.pk)
    client = Client()
    if user is not None and auth == "session":
        client.force_login(user)
    elif user is not None:
        _, raw = services.token_create(user=user, name="role test")
        client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    kwargs = {"data": body, "content_type": "application/json"} if body is not None else {
        "content_type": "application/json"}
    before = AuditEvent.objects.filter(action="command.issued").count()

    response = getattr(client, method)(path, **kwargs)

    if role == "anonymous":
        assert response.status_code == 401, response.content
    elif _allowed(role, perm):
        assert response.status_code in (200, 202), (response.status_code, response.content)
    else:
        assert response.status_code == 403, (response.status_code, response.content)
        assert "permission" in response.json()["detail"]
        # A refused command leaves no trace but the refusal: nothing issued, nothing written.
        assert AuditEvent.objects.filter(action="command.issued").count() == before
        assert not any(Path(k.state_dir, "control.json").exists() for k in kernels.values())
