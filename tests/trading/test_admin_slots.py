"""The slot's admin: its buttons and the changelist's bulk actions, configuration through slot_configure."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from kernel.control import read_control
from tests.trading.admin_fixtures import (  # noqa: F401 (fixtures)
    kernel, login, no_kernel_to_wait_for, slot, slot_form, slot_url, state_dir, texts,
)
from trading.models import AuditEvent, ControlCommand, Slot

pytestmark = pytest.mark.django_db


# --------------------------------------------------------------------- slot buttons


def test_slot_pause_issues_slot_pause_from_the_admin_and_audits_it(login, slot, django_capture_on_commit_callbacks):
    client = login("Operator")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(slot_url(slot, "slot.pause"))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:trading_slot_change", args=[slot.pk])
    command = ControlCommand.objects.get(action="slot.pause")
    assert (command.kernel, command.slot_id, command.source, command.actor) == (slot.kernel, "btc-5m", "admin", "operator")
    event = AuditEvent.objects.get(action="command.issued", command_id=command.command_id)
    assert (event.actor, event.source, event.kernel_name, event.slot_id) == ("operator", "admin", "k1", "btc-5m")
    assert texts(response) == [f"Pause on k1/btc-5m: sent, not confirmed yet (command id {command.command_id})"]
    # Delivered (after the commit) into the kernel's control.json.
    sent = read_control(Path(slot.kernel.state_dir) / "control.json").commands
    assert [(c.id, c.action, c.slot) for c in sent] == [(command.command_id, "slot.pause", "btc-5m")]


@pytest.mark.parametrize("action", ["slot.pause", "slot.resume", "slot.flatten"])
def test_viewers_may_not_press_slot_buttons(login, slot, action):
    response = login("Viewer").post(slot_url(slot, action), {"confirm": "yes"})
    assert response.status_code == 403
    assert not ControlCommand.objects.exists()


def test_flatten_asks_for_confirmation_then_issues(login, slot):
    client = login("Operator")
    page = client.get(slot_url(slot, "slot.flatten"))
    assert page.status_code == 200
    assert "sells the whole position of k1/btc-5m at market" in page.content.decode()
    assert client.post(slot_url(slot, "slot.flatten")).status_code == 200  # unconfirmed: still asks
    assert not ControlCommand.objects.exists()
    client.post(slot_url(slot, "slot.flatten"), {"confirm": "yes"})
    assert ControlCommand.objects.get().action == "slot.flatten"


def test_slot_page_buttons_per_role(login, slot):
    change = reverse("admin:trading_slot_change", args=[slot.pk])
    page = login("Viewer").get(change).content.decode()
    assert 'id="slot-pause"' not in page and 'id="slot-flatten"' not in page
    assert 'name="_save"' not in page  # read-only
    page = login("Operator").get(change).content.decode()
    # The slot is active: Resume would do nothing, so only Pause and Flatten show (issue 14).
    assert 'id="slot-pause"' in page and 'id="slot-resume"' not in page and 'id="slot-flatten"' in page
    assert 'name="_save"' not in page  # operators do not configure slots


def test_changelist_actions_pause_selected_slots(login, kernel):
    client = login("Operator")
    slots = list(Slot.objects.filter(kernel=kernel))
    response = client.post(reverse("admin:trading_slot_changelist"),
                           {"action": "pause_slots", "_selected_action": [s.pk for s in slots]})
    assert response.status_code == 302
    assert sorted(ControlCommand.objects.filter(action="slot.pause").values_list("slot_id", flat=True)) == [
        "btc-5m", "eth-5m"]
    assert len([t for t in texts(response) if "sent, not confirmed yet" in t]) == 2


def test_changelist_flatten_needs_a_confirmation(login, kernel):
    client = login("Operator")
    pks = list(Slot.objects.filter(kernel=kernel).values_list("pk", flat=True))
    url = reverse("admin:trading_slot_changelist")
    page = client.post(url, {"action": "flatten_slots", "_selected_action": pks})
    assert page.status_code == 200 and "sells the whole position of each slot below at market" in page.content.decode()
    assert not ControlCommand.objects.exists()
    client.post(url, {"action": "flatten_slots", "_selected_action": pks, "confirm": "yes"})
    assert ControlCommand.objects.filter(action="slot.flatten").count() == 2


def test_viewers_get_no_slot_actions(login, kernel):
    response = login("Viewer").get(reverse("admin:trading_slot_changelist"))
    assert response.status_code == 200
    assert "pause_slots" not in response.content.decode()
    response = login("Viewer").post(reverse("admin:trading_slot_changelist"), {
        "action": "pause_slots", "_selected_action": list(Slot.objects.values_list("pk", flat=True))})
    assert not ControlCommand.objects.exists()


# --------------------------------------------------------------------- slot configuration




def test_risk_users_configure_a_slot_through_slot_configure(login, slot):
    client = login("Risk")
    change = reverse("admin:trading_slot_change", args=[slot.pk])
    response = client.post(change, slot_form(slot, order_notional="250", params='{"fast": 9, "slow": 21}'))
    assert response.status_code == 302, response.content.decode()[:2000]
    slot.refresh_from_db()
    assert (slot.order_notional, slot.params) == (250.0, {"fast": 9, "slow": 21})
    command = ControlCommand.objects.get(action="slot.configure")
    assert command.args["order_notional"] == 250.0 and command.source == "admin"
    event = AuditEvent.objects.get(action="config.changed")
    assert event.payload["changed"] == ["order_notional", "params"] and event.actor == "risk"
    assert any(f"sent, not confirmed yet (command id {command.command_id})" in t for t in texts(response))
    # The kernel still runs the old configuration: the page says where they differ.
    page = client.get(change).content.decode()
    assert 'id="drift-banner"' in page and "order_notional" in page


def test_a_configuration_the_service_refuses_is_shown_on_the_form(login, slot):
    client = login("Risk")
    change = reverse("admin:trading_slot_change", args=[slot.pk])
    response = client.post(change, slot_form(slot, symbol="btc", params='{"fast": 1}'))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "BASE/QUOTE" in " ".join(errors["symbol"])
    assert not ControlCommand.objects.exists()
    slot.refresh_from_db()
    assert slot.symbol == "BTC/USDT"
    # A strategy's params are checked too (ema_cross: fast >= 2).
    response = client.post(change, slot_form(slot, params='{"fast": 1}'))
    assert response.status_code == 200
    assert "params.fast" in " ".join(response.context["adminform"].form.errors["params"])
    assert not AuditEvent.objects.filter(action="config.changed").exists()


def test_operators_may_not_configure_slots(login, slot):
    change = reverse("admin:trading_slot_change", args=[slot.pk])
    response = login("Operator").post(change, slot_form(slot, order_notional="1"))
    assert response.status_code == 403
    slot.refresh_from_db()
    assert slot.order_notional == 500.0


def test_slots_are_neither_added_nor_deleted_in_the_admin(admin_client, slot):
    assert admin_client.get(reverse("admin:trading_slot_add")).status_code == 403
    assert admin_client.post(reverse("admin:trading_slot_delete", args=[slot.pk]), {"post": "yes"}).status_code == 403
    assert Slot.objects.filter(pk=slot.pk).exists()
