"""The releases API (trading/api_releases.py, issue 11): versions and diff read from the
kernel's store, the release steps as commands (202, the command's id, a reason required),
refusals as JSON with their status, the fleet's drift and a fleet-wide reload. Roles are in
test_api_roles.py's table."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tests.support.status_reader import read_control as control_json
from tests.trading.admin_fixtures import state_dir  # noqa: F401 - fixtures
from tests.trading.release_fixtures import (  # noqa: F401 - fixtures
    canary_entry,
    release_kernel,
    resync,
    store,
    write_release_status,
)
from trading import services
from trading.models import AuditEvent, ControlCommand

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_role():
    services.roles_setup()

    def client_for(group: str) -> Client:
        user = User.objects.create_user(group.lower())
        user.groups.add(Group.objects.get(name=group))
        client = Client()
        client.force_login(user)
        return client

    return client_for


def _post(client: Client, path: str, body: dict):
    return client.post(path, data=body, content_type="application/json")


def test_versions_newest_first_with_their_slots_and_the_drift(release_kernel, state_dir, store, as_role):
    resync(release_kernel, state_dir, tick=11, differs=True)
    response = as_role("Viewer").get("/api/kernels/k1/strategies/ema_cross/versions")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["kernel"], body["strategy"], body["version"], body["sha256"]) == ("k1", "ema_cross", 2, store[2])
    assert body["drift"] is True and body["working_tree"] == {"sha256": "f" * 64, "differs": True}
    assert [(v["number"], v["current"], v["slots"]) for v in body["versions"]] == [
        (2, True, ["btc-5m", "eth-5m"]), (1, False, [])]
    assert body["versions"][1]["previous"] is True and body["versions"][1]["by"] == "alice@host"


def test_a_diff_and_its_refusals(release_kernel, store, as_role):
    client = as_role("Viewer")
    body = client.get("/api/kernels/k1/strategies/ema_cross/diff", {"a": "v1", "b": store[2][:10]}).json()
    assert (body["a"]["number"], body["b"]["number"], body["changed"]) == (1, 2, 1)
    changed = next(f for f in body["files"] if f["name"] == "ema_cross.py")
    assert changed["status"] == "changed" and "+    return 'buy'" in changed["diff"]

    missing = client.get("/api/kernels/k1/strategies/ema_cross/diff", {"a": "1", "b": "9"})
    assert missing.status_code == 404 and "no stored version 9 of ema_cross" in missing.json()["detail"]
    assert client.get("/api/kernels/k1/strategies/ema_cross/diff", {"a": "1", "b": "../x"}).status_code == 422


def test_rollback_to_a_version_through_the_api(release_kernel, store, as_role, django_capture_on_commit_callbacks):
    client = as_role("Risk")
    with django_capture_on_commit_callbacks(execute=True):  # as the request's commit would
        response = _post(client, "/api/kernels/k1/strategies/ema_cross/rollback",
                         {"version": 1, "reason": "v2 loses money"})

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["action"] == "rollback"
    assert ControlCommand.objects.get(command_id=body["command_id"]).status == "delivered"
    wire = control_json(release_kernel.state_dir)["commands"]
    assert [(c["id"], c["args"]) for c in wire] == [(body["command_id"], {"strategy": "ema_cross", "version": 1})]
    assert AuditEvent.objects.get(action="version.rollback").payload["reason"] == "v2 loses money"


@pytest.mark.parametrize("body,status,detail", [
    ({"version": 1}, 422, "reason"),
    ({"version": 1, "reason": ""}, 422, "reason"),
    ({"version": 1, "sha256": "a" * 64, "reason": "r"}, 422, "not both"),
    ({"version": 5, "reason": "r"}, 404, "has no stored v5 of ema_cross"),
    ({"sha256": "A" * 64, "reason": "r"}, 422, "sha256"),
    ({"version": 1, "reason": "r", "force": True}, 422, "force"),
])
def test_a_bad_rollback_is_refused_and_nothing_is_written(release_kernel, store, as_role, body, status, detail):
    response = _post(as_role("Risk"), "/api/kernels/k1/strategies/ema_cross/rollback", body)
    assert response.status_code == status, response.content
    assert detail in response.content.decode()
    assert not ControlCommand.objects.exists() and not Path(release_kernel.state_dir, "control.json").exists()


def test_canary_shadow_promote_abort_through_the_api(release_kernel, state_dir, store, as_role,
                                                    django_capture_on_commit_callbacks):
    operator, risk = as_role("Operator"), as_role("Risk")
    with django_capture_on_commit_callbacks(execute=True):
        canary = _post(operator, "/api/kernels/k1/strategies/ema_cross/canary",
                       {"slots": ["btc-5m"], "budget": {"cycles": 10}, "reason": "new exit"})
    assert canary.status_code == 202, canary.content
    assert ControlCommand.objects.get(command_id=canary.json()["command_id"]).args == {
        "strategy": "ema_cross", "slots": ["btc-5m"], "budget": {"cycles": 10}}

    # The kernel reports the canary running: a second one, or a shadow, is a conflict.
    resync(release_kernel, state_dir, tick=11, canary=canary_entry(3, "c" * 64, ["btc-5m"]))
    again = _post(operator, "/api/kernels/k1/strategies/ema_cross/shadow", {"reason": "r"})
    assert again.status_code == 409 and "a canary of ema_cross runs on k1" in again.json()["detail"]
    assert _post(operator, "/api/kernels/k1/strategies/ema_cross/promote", {"reason": "r"}).status_code == 403
    assert _post(operator, "/api/kernels/k1/strategies/ema_cross/abort", {"reason": "r"}).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        promote = _post(risk, "/api/kernels/k1/strategies/ema_cross/promote", {"reason": "clean 20 cycles"})
    with django_capture_on_commit_callbacks(execute=True):
        abort = _post(risk, "/api/kernels/k1/strategies/ema_cross/abort", {"reason": "no, stop it"})
    assert (promote.status_code, abort.status_code) == (202, 202)
    wire = [(c["action"], c["args"]) for c in control_json(release_kernel.state_dir)["commands"]]
    assert wire[1:] == [("promote", {"strategy": "ema_cross"}), ("rollback", {"strategy": "ema_cross"})]

    bad = _post(operator, "/api/kernels/k1/strategies/ema_cross/canary", {"slots": ["BTC 5m"], "reason": "r"})
    assert bad.status_code == 422


def test_the_fleet_drift_and_a_fleet_reload(release_kernel, tmp_path, store, as_role,
                                            django_capture_on_commit_callbacks):
    other = tmp_path / "k2"
    other.mkdir()
    write_release_status(other, running=1)
    services.kernel_register(name="k2", state_dir=str(other))

    fleet = as_role("Viewer").get("/api/fleet/strategies").json()
    assert [(f["strategy"], f["drift"], f["shas"]) for f in fleet] == [("ema_cross", True, sorted(store.values()))]
    assert fleet[0]["kernels"]["k2"]["version"] == 1

    assert _post(as_role("Operator"), "/api/fleet/strategies/ema_cross/reload", {"reason": "r"}).status_code == 403
    client = as_role("Risk")
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(client, "/api/fleet/strategies/ema_cross/reload", {"reason": "ship it", "kernels": ["k2"]})
    assert response.status_code == 200, response.content
    body = response.json()
    # Sent (committed only as the test's block ends), not answered: no kernel runs here.
    assert [(k["kernel"], k["status"], k["sha256"], k["converged"]) for k in body["kernels"]] == [
        ("k2", "pending", store[1], False)]
    assert ControlCommand.objects.get(command_id=body["kernels"][0]["command_id"]).status == "delivered"
    assert body["converged"] is False
    assert not Path(release_kernel.state_dir, "control.json").exists()  # k1 was not asked
    unknown = _post(client, "/api/fleet/strategies/ema_cross/reload", {"reason": "r", "kernels": ["k9"]})
    assert unknown.status_code == 404
