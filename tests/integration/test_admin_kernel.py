"""The admin's buttons against a real ``runkernel`` subprocess: a click reaches the kernel
through control.json, the kernel's answer comes back through status.json, and both land in
the audit log. (Django's test client does the clicking; test_browser.py uses a browser.)
"""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from trading import services
from trading.models import AuditEvent, ControlCommand, Slot

# Real transactions: a command is delivered when the admin's transaction commits, as in production.
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("audit_log_flushable")]

# Generous: the kernel answers within a few ticks; a slow CI machine must not fail the test.
WAIT_S = 30.0


@pytest.fixture
def registered(kernels, settings):
    """A demo kernel at 600× speed, registered with the console (its slots synced)."""
    settings.FORESIGHT_ADMIN_COMMAND_WAIT_S = WAIT_S
    proc = kernels(speed=600)
    kernel = services.kernel_register(name="it", state_dir=str(proc.state_dir))
    assert Slot.objects.filter(kernel=kernel).count() == 16
    return proc, kernel


@pytest.fixture
def login(client, django_user_model):
    services.roles_setup()

    def as_role(role: str):
        user = django_user_model.objects.create_user(role.lower(), is_staff=True)
        user.groups.add(Group.objects.get(name=role))
        client.force_login(user)
        return client

    return as_role


def click(client, url: str, data: dict | None = None) -> list[str]:
    """POST a button and follow the redirect: the messages the operator then reads."""
    response = client.post(url, data or {}, follow=True)
    assert response.redirect_chain and response.status_code == 200
    return [str(m) for m in response.context["messages"]]


def test_slot_pause_button_pauses_the_slot_in_the_kernel_and_the_audit_log_says_so(registered, login):
    proc, kernel = registered
    slot = Slot.objects.get(kernel=kernel, slot_id="btc-5m")
    messages = click(login("Operator"), reverse("admin:trading_slot_control", args=[slot.pk, "slot.pause"]))
    assert messages == ["Pause on it/btc-5m: applied"]
    command = ControlCommand.objects.get(action="slot.pause", slot_id="btc-5m")
    assert (command.status, command.source, command.actor) == ("applied", "admin", "operator")
    status = proc.status()
    assert proc.slot(status, "btc-5m")["state"] == "paused"
    assert proc.slot(status, "eth-5m")["state"] == "active"
    trail = AuditEvent.objects.filter(command_id=command.command_id).order_by("at", "id")
    assert [(e.action, e.outcome) for e in trail] == [("command.issued", "issued"), ("command.applied", "applied")]
    assert {e.actor for e in trail} == {"operator"} and trail[0].source == "admin"
    slot.refresh_from_db()
    assert slot.state == "paused"


def test_a_command_the_kernel_rejects_shows_the_kernels_reason(registered, login):
    proc, kernel = registered
    client = login("Risk")
    messages = click(client, reverse("admin:trading_kernel_control", args=[kernel.pk, "rollback"]),
                     {"strategy": "ema_cross", "confirm": "yes", "reason": "drill"})  # confirmed (issue 14)
    reason = "no previous version of ema_cross to roll back to"
    assert messages == [f"Rollback ema_cross on it: rejected: {reason}"]
    command = ControlCommand.objects.get(action="rollback")
    assert (command.status, command.error) == ("rejected", reason)
    event = AuditEvent.objects.get(action="command.rejected", command_id=command.command_id)
    assert event.payload["error"] == reason
    assert any(c["id"] == command.command_id and c["result"] == "rejected" for c in proc.status()["commands"])


def test_halt_then_release_from_the_admin(registered, login):
    proc, kernel = registered
    client = login("Risk")
    # Releasing what is not halted is refused before anything is sent.
    messages = click(client, reverse("admin:trading_kernel_release", args=[kernel.pk]))
    assert messages == ["Release halt on it: kernel it is not halted (its last status says running)"]

    messages = click(client, reverse("admin:trading_kernel_halt", args=[kernel.pk]),
                     {"confirm": "yes", "reason": "integration drill"})
    assert messages == ["HALT on it: applied"]
    status = proc.status()
    assert status["state"] == "halted" and status["halt"]["reason"] == "integration drill"
    dashboard = client.get(reverse("admin:trading_kernel_dashboard", args=[kernel.pk])).content.decode()
    assert 'id="halt-banner"' in dashboard and "integration drill" in dashboard

    # While halted the console refuses a resume with the reason, and nothing is sent.
    messages = click(client, reverse("admin:trading_kernel_control", args=[kernel.pk, "resume"]))
    assert messages == ["Resume on it: kernel it is halted: release the halt first, then resume"]

    messages = click(client, reverse("admin:trading_kernel_release", args=[kernel.pk]),
                     {"confirm": "yes", "reason": "drill over"})  # confirmed with a reason (issue 14)
    assert messages == ["Release halt on it: applied: kernel paused: resume to trade",
                        "Kernel it stays paused until someone resumes it."]
    assert proc.wait(lambda s: s["state"] == "paused", what="paused after the release")
    actions = list(AuditEvent.objects.filter(kernel_name="it").values_list("action", flat=True))
    assert {"halt.engaged", "halt.observed", "halt.cleared", "command.applied"} <= set(actions)
