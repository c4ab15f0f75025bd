"""trading.services.command_delivery and redelivery: a failed delivery stays pending and is
sent again, an undelivered command expires once, a release is never sent late."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.trading.service_calls import audit_count, issue_committed
from trading import services
from trading.models import ControlCommand, Kernel
from tests.support.status_reader import read_control as control_json

pytestmark = pytest.mark.django_db


def test_failed_delivery_stays_pending_and_is_redelivered(idle_kernel, tmp_path, django_capture_on_commit_callbacks):
    state_dir = Path(idle_kernel.state_dir)
    state_dir.rename(tmp_path / "moved-away")

    command = issue_committed(idle_kernel, "pause", django_capture_on_commit_callbacks)

    command.refresh_from_db()
    assert command.status == "pending" and "does not exist" in command.error and command.delivery_attempts == 1
    services.status_sync(kernel=idle_kernel)  # still missing: another attempt, audited once
    assert audit_count("command.delivery_failed", command_id=command.command_id) == 1
    (tmp_path / "moved-away").rename(state_dir)

    services.status_sync(kernel=idle_kernel)

    command.refresh_from_db()
    assert command.status == "delivered" and command.delivery_attempts == 3
    assert control_json(state_dir)["commands"][0]["id"] == command.command_id


def test_undelivered_commands_expire_once(idle_kernel, tmp_path, django_capture_on_commit_callbacks):
    Path(idle_kernel.state_dir).rename(tmp_path / "gone")
    command = issue_committed(idle_kernel, "pause", django_capture_on_commit_callbacks)
    ControlCommand.objects.filter(pk=command.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    services.status_sync(kernel=idle_kernel)
    services.status_sync(kernel=idle_kernel)

    command.refresh_from_db()
    assert command.status == "expired"
    assert audit_count("command.expired", command_id=command.command_id) == 1


def test_a_release_is_never_redelivered_late(idle_kernel, tmp_path, django_capture_on_commit_callbacks):
    Kernel.objects.filter(pk=idle_kernel.pk).update(halt_engaged=True, state="halted")
    idle_kernel.refresh_from_db()
    Path(idle_kernel.state_dir).rename(tmp_path / "gone")
    command = issue_committed(idle_kernel, "release", django_capture_on_commit_callbacks)
    command.refresh_from_db()
    assert command.status == "failed"  # it writes halt: false, which could cancel a newer halt
