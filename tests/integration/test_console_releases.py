"""The console's releases against a real ``runkernel`` (issue 11): after a restart (the
previous version no longer in memory), the API lists the kernel's stored versions read from
its state dir, rolls back to v1 by number, and the kernel's answer, the slots on v1 and the
reason land in the console and its audit log."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from trading import services
from trading.models import AuditEvent, ControlCommand, Slot

from .conftest import add_flip_slots

# Real transactions: a command is delivered when its transaction commits, as in production.
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("audit_log_flushable")]

WAIT_S = 30.0  # generous: the kernel answers within a few ticks


def _client(role: str) -> Client:
    services.roles_setup()
    user, _ = User.objects.get_or_create(username=role.lower())
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def test_rollback_to_v1_through_the_api_after_a_restart(kernels, strategies_dir):
    k = kernels(strategies=strategies_dir, demo=False)
    slots = add_flip_slots(k, 2)
    v1 = k.wait(lambda s: "flip" in s["strategies"], what="flip loaded")["strategies"]["flip"]["sha256"]
    flip = strategies_dir / "flip.py"
    flip.write_text(flip.read_text() + "\n# v2\n")
    k.ok("reload", args={"strategy": "flip"})
    v2 = k.wait(lambda s: s["strategies"]["flip"]["version"] == 2, what="v2 current")["strategies"]["flip"]["sha256"]
    assert k.terminate() == 0
    k2 = kernels(k.state_dir, strategies=strategies_dir, demo=False)
    kernel = services.kernel_register(name="rel", state_dir=str(k2.state_dir))

    versions = _client("Viewer").get("/api/kernels/rel/strategies/flip/versions").json()
    assert [(v["number"], v["sha256"], v["current"]) for v in versions["versions"]] == [(2, v2, True), (1, v1, False)]
    assert versions["versions"][0]["slots"] == sorted(slots) and versions["drift"] is False
    diff = _client("Operator").get("/api/kernels/rel/strategies/flip/diff", {"a": "1", "b": "2"}).json()
    assert "+# v2" in diff["files"][0]["diff"]

    response = _client("Risk").post("/api/kernels/rel/strategies/flip/rollback",
                                    data={"version": 1, "reason": "v2 is wrong"}, content_type="application/json")
    assert response.status_code == 202, response.content
    command = services.command_wait(command=ControlCommand.objects.get(command_id=response.json()["command_id"]),
                                    timeout_s=WAIT_S)

    assert command.status == "applied", command.error
    st = k2.wait(lambda s: s["strategies"]["flip"]["version"] == 1, what="v1 current")
    assert st["strategies"]["flip"]["sha256"] == v1
    k2.wait(lambda s: all(k2.slot(s, x)["last_cycle_sha256"] == v1 for x in slots), what="every slot trading v1")
    services.status_sync(kernel=kernel)
    assert set(Slot.objects.filter(kernel=kernel).values_list("strategy_sha256", flat=True)) == {v1}
    listing = _client("Viewer").get("/api/kernels/rel/strategies/flip/versions").json()
    assert [(v["number"], v["current"], v["slots"]) for v in listing["versions"]] == [
        (2, False, []), (1, True, sorted(slots))]
    issued = AuditEvent.objects.get(action="version.rollback", command_id=command.command_id)
    assert issued.payload["reason"] == "v2 is wrong" and issued.actor == "risk"
    assert AuditEvent.objects.filter(action="command.applied", command_id=command.command_id).count() == 1
