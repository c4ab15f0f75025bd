"""The control commands in the admin: a read-only list."""
from __future__ import annotations

import pytest
from django.urls import reverse

from tests.trading.admin_fixtures import (  # noqa: F401 (fixtures)
    kernel, login, no_kernel_to_wait_for, slot, slot_url, state_dir,
)
from trading.models import ControlCommand

pytestmark = pytest.mark.django_db


def test_commands_are_read_only(admin_client, login, slot):
    login("Operator").post(slot_url(slot, "slot.pause"))
    command = ControlCommand.objects.get()
    listing = admin_client.get(reverse("admin:trading_controlcommand_changelist") + "?status=pending&q=btc-5m")
    assert command.command_id in listing.content.decode()
    assert admin_client.get(reverse("admin:trading_controlcommand_add")).status_code == 403
    change = reverse("admin:trading_controlcommand_change", args=[command.pk])
    assert admin_client.post(change, {"status": "applied"}).status_code == 403
    assert admin_client.post(reverse("admin:trading_controlcommand_delete", args=[command.pk]),
                             {"post": "yes"}).status_code == 403
    command.refresh_from_db()
    assert command.status == "pending"
