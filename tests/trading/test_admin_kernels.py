"""The kernel's admin: its buttons per role, HALT and its release, the dashboard, registering a kernel."""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from kernel.control import read_control
from kernel.protocol import CommandStatus
from tests.trading.admin_fixtures import (  # noqa: F401 (fixtures)
    iso, kernel, kernel_url, login, no_kernel_to_wait_for, state_dir, texts, write_kernel_status,
)
from trading import services
from trading.models import AuditEvent, ControlCommand, Kernel

pytestmark = pytest.mark.django_db

OPERATE = ("start", "stop", "pause", "resume", "reload")


# --------------------------------------------------------------------- kernel buttons per role


@pytest.mark.parametrize("role", ["Operator", "Risk"])
@pytest.mark.parametrize("action", OPERATE)
def test_operators_and_risk_may_press_the_kernel_buttons(login, kernel, role, action):
    client = login(role)
    response = client.post(kernel_url("control", kernel, action))
    assert response.status_code == 302
    command = ControlCommand.objects.get(kernel=kernel, action=action)
    assert (command.source, command.actor) == ("admin", role.lower())
    assert AuditEvent.objects.filter(action="command.issued", command_id=command.command_id).exists()
    assert texts(response) == [
        f"{dict(start='Start', stop='Stop', pause='Pause', resume='Resume', reload='Reload strategies')[action]} on k1: "
        f"sent, not confirmed yet (command id {command.command_id})"
    ]


@pytest.mark.parametrize("role", ["Viewer", None])
@pytest.mark.parametrize("action", OPERATE + ("rollback",))
def test_viewers_may_not_press_the_kernel_buttons(login, kernel, role, action):
    response = login(role).post(kernel_url("control", kernel, action), {"strategy": "ema_cross"})
    assert response.status_code == 403
    assert not ControlCommand.objects.exists()
    assert not AuditEvent.objects.filter(action="command.issued").exists()


def test_rollback_is_for_risk_users_only_and_names_its_strategy(login, kernel):
    assert login("Operator").post(kernel_url("control", kernel, "rollback"), {"strategy": "ema_cross"}).status_code == 403
    client = login("Risk")
    response = client.post(kernel_url("control", kernel, "rollback"))
    assert response.status_code == 302
    assert texts(response) == ["Rollback on k1: choose the strategy to roll back"]
    # A rollback asks first (issue 14), naming what it does; the reason is optional.
    page = client.post(kernel_url("control", kernel, "rollback"), {"strategy": "ema_cross"}).content.decode()
    assert "back to its previous version on every slot that runs it" in page
    assert not ControlCommand.objects.filter(action="rollback").exists()
    client.post(kernel_url("control", kernel, "rollback"), {"strategy": "ema_cross", "confirm": "yes",
                                                            "reason": "v2 misbehaves"})
    command = ControlCommand.objects.get(action="rollback")
    assert command.args == {"strategy": "ema_cross"}
    assert AuditEvent.objects.get(action="version.rollback", command_id=command.command_id).payload["reason"] == "v2 misbehaves"


def test_reload_of_one_strategy_and_a_redirect_back_to_where_the_button_was(login, kernel):
    client = login("Operator")
    dashboard = kernel_url("dashboard", kernel) + "?window=1h"
    response = client.post(kernel_url("control", kernel, "reload"), {"strategy": "ema_cross", "next": dashboard})
    assert response["Location"] == dashboard
    assert ControlCommand.objects.get(action="reload").args == {"strategy": "ema_cross"}
    # An open redirect is not followed.
    response = client.post(kernel_url("control", kernel, "pause"), {"next": "https://evil.example/"})
    assert response["Location"] == reverse("admin:trading_kernel_change", args=[kernel.pk])


def test_a_button_is_a_post(login, kernel):
    response = login("Operator").get(kernel_url("control", kernel, "stop"))
    assert response.status_code == 302
    assert not ControlCommand.objects.exists()


def test_an_unknown_action_is_not_found(login, kernel):
    assert login("Risk").post(kernel_url("control", kernel, "explode")).status_code == 404


def test_kernel_page_shows_only_the_buttons_the_user_may_press(login, kernel):
    page = login("Viewer").get(reverse("admin:trading_kernel_change", args=[kernel.pk])).content.decode()
    assert 'id="halt-button"' not in page and 'id="kernel-pause"' not in page and 'id="release-button"' not in page
    page = login("Operator").get(reverse("admin:trading_kernel_change", args=[kernel.pk])).content.decode()
    assert 'id="halt-button"' in page and 'id="kernel-pause"' in page
    assert 'id="release-button"' not in page and 'value="rollback"' not in page
    page = login("Risk").get(reverse("admin:trading_kernel_change", args=[kernel.pk])).content.decode()
    assert 'id="halt-button"' in page and 'value="rollback"' in page
    assert 'id="release-button"' not in page  # Release only while halted (issue 14)
    assert '<option value="ema_cross">ema_cross</option>' in page


# --------------------------------------------------------------------- halt and release


def test_halt_asks_for_confirmation_naming_the_consequence(login, kernel):
    response = login("Operator").get(kernel_url("halt", kernel))
    assert response.status_code == 200
    assert ("stops every strategy and cancels resting orders on k1; "
            "trading stays stopped until a Risk user releases it") in response.content.decode()
    assert not (Path(kernel.state_dir) / "control.json").exists()


def test_halt_confirmed_writes_control_json_and_audits(login, kernel):
    response = login("Operator").post(kernel_url("halt", kernel), {"confirm": "yes", "reason": "runaway orders"})
    assert response.status_code == 302
    read = read_control(Path(kernel.state_dir) / "control.json")
    assert read.halt and read.halt_reason == "runaway orders"
    command = ControlCommand.objects.get(kernel=kernel, action="halt")
    assert command.source == "admin" and command.actor == "operator"
    assert AuditEvent.objects.filter(action="halt.engaged", command_id=command.command_id, actor="operator").exists()
    assert texts(response) == [f"HALT on k1: sent, not confirmed yet (command id {command.command_id})"]


@pytest.mark.parametrize("role", ["Viewer", None])
def test_viewers_may_not_halt(login, kernel, role):
    client = login(role)
    assert client.get(kernel_url("halt", kernel)).status_code == 403
    assert client.post(kernel_url("halt", kernel), {"confirm": "yes"}).status_code == 403
    assert not (Path(kernel.state_dir) / "control.json").exists()


def test_release_is_for_risk_users_and_refused_when_not_halted(login, kernel):
    assert login("Operator").post(kernel_url("release", kernel)).status_code == 403
    response = login("Risk").post(kernel_url("release", kernel))
    assert response.status_code == 302
    assert texts(response) == ["Release halt on k1: kernel k1 is not halted (its last status says running)"]
    assert not ControlCommand.objects.filter(action="release").exists()


def test_release_of_a_halted_kernel_is_issued(login, kernel):
    write_kernel_status(Path(kernel.state_dir), halt_reason="manual stop", tick=11)
    services.status_sync(kernel=kernel)
    client = login("Risk")
    # A confirmation page first, which wants a reason (issue 14).
    assert "Reason (required" in client.post(kernel_url("release", kernel)).content.decode()
    page = client.post(kernel_url("release", kernel), {"confirm": "yes", "reason": "  "}).content.decode()
    assert "A reason is required to release a halt." in page
    assert not ControlCommand.objects.filter(action="release").exists()
    response = client.post(kernel_url("release", kernel), {"confirm": "yes", "reason": "positions checked"})
    command = ControlCommand.objects.get(action="release")
    assert command.actor == "risk" and command.source == "admin"
    assert command.args == {"reason": "positions checked"}
    issued = AuditEvent.objects.get(action="command.issued", command_id=command.command_id)
    assert issued.payload["args"]["reason"] == "positions checked"
    assert texts(response) == [f"Release halt on k1: sent, not confirmed yet (command id {command.command_id})"]


# --------------------------------------------------------------------- the dashboard


def test_dashboard_shows_a_halted_kernel_with_a_stale_heartbeat_loudly(login, kernel):
    write_kernel_status(Path(kernel.state_dir), heartbeat=timezone.now() - timedelta(seconds=45),
                        halt_reason="exchange is misbehaving", tick=12)
    response = login("Viewer").get(kernel_url("dashboard", kernel))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="halt-banner"' in page and "exchange is misbehaving" in page
    assert 'id="stale-banner"' in page and "KERNEL NOT REPORTING" in page
    assert "45 s ago" in page
    assert "<svg" in page or "Not enough equity samples" in page


def test_dashboard_of_a_healthy_kernel(login, kernel):
    write_kernel_status(Path(kernel.state_dir), tick=13,
                        commands=[CommandStatus(id="x1", action="pause", result="rejected",
                                                error="some reason", at=iso(timezone.now()))])
    response = login("Operator").get(kernel_url("dashboard", kernel) + "?window=1h")
    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="halt-banner"' not in page and 'id="stale-banner"' not in page
    assert 'id="slot-btc-5m"' in page and 'id="slot-eth-5m"' in page
    assert re.search(r'v1 <code title="24fb6748[0-9a-f]{56}">24fb6748</code>', page)  # the full sha256 on hover
    assert 'id="halt-button"' in page and "<strong>1h</strong>" in page
    assert "dashboard-live" in page  # and the script that refreshes it


def test_dashboard_fragment_is_the_live_part_only(login, kernel):
    client = login("Viewer")
    response = client.get(kernel_url("dashboard", kernel) + "?fragment=1&window=bogus")
    page = response.content.decode()
    assert response.status_code == 200 and "<html" not in page
    assert 'id="slots-table"' in page and "Over the last 24h" in page


def test_dashboard_draws_the_equity_chart(login, kernel):
    from trading.models import EquitySample

    now = timezone.now()
    for i, equity in enumerate([100_000.0, 100_050.0, 99_980.0, 100_120.0]):
        EquitySample.objects.create(kernel=kernel, at=now - timedelta(minutes=30 - i), equity=equity)
    page = login("Viewer").get(kernel_url("dashboard", kernel) + "?window=1h").content.decode()
    assert '<svg class="equity-chart"' in page and "<polyline" in page
    assert "100,120.00" in page  # the top of the scale


def test_dashboard_needs_view_permission(login, kernel):
    assert login(None).get(kernel_url("dashboard", kernel)).status_code == 403


# --------------------------------------------------------------------- registering a kernel


def test_a_superuser_registers_a_kernel_through_kernel_register(admin_client, tmp_path):
    folder = tmp_path / "k2"
    folder.mkdir()
    add = reverse("admin:trading_kernel_add")
    response = admin_client.post(add, {"name": "k2", "state_dir": str(folder), "host": "", "queue": ""})
    assert response.status_code == 302
    kernel = Kernel.objects.get(name="k2")
    assert AuditEvent.objects.filter(action="kernel.registered", kernel_name="k2").exists()
    # The same state dir under a second name is refused, and the form says why.
    response = admin_client.post(add, {"name": "k3", "state_dir": str(folder), "host": "", "queue": ""})
    assert response.status_code == 200
    assert "already registered as kernel 'k2'" in " ".join(response.context["adminform"].form.non_field_errors())
    assert list(Kernel.objects.values_list("name", flat=True)) == ["k2"]
    assert admin_client.post(reverse("admin:trading_kernel_delete", args=[kernel.pk]),
                             {"post": "yes"}).status_code == 403


def test_operators_register_no_kernels(login, tmp_path):
    response = login("Operator").post(reverse("admin:trading_kernel_add"),
                                      {"name": "k9", "state_dir": str(tmp_path), "host": "", "queue": ""})
    assert response.status_code == 403
    assert not Kernel.objects.exists()
