"""Issue 15, item 3: the console's lines about a command's terminal transitions name it
(``command_id`` on the record: the JSON field, or `` cmd=<id>`` in text)."""
from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.trading.service_calls import issue_committed
from trading import services
from trading.models import ControlCommand
from trading.services.command_records import command_fail

pytestmark = pytest.mark.django_db


def lines_naming(caplog, command_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trading.services" and command_id in r.getMessage()]


def test_an_expired_command_is_logged_with_its_id(idle_kernel, tmp_path, caplog, django_capture_on_commit_callbacks):
    Path(idle_kernel.state_dir).rename(tmp_path / "gone")
    command = issue_committed(idle_kernel, "pause", django_capture_on_commit_callbacks)
    ControlCommand.objects.filter(pk=command.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    caplog.set_level(logging.INFO, logger="trading.services")

    services.status_sync(kernel=idle_kernel)

    expired = [r for r in lines_naming(caplog, command.command_id) if "expired undelivered" in r.getMessage()]
    assert [(r.levelname, r.command_id) for r in expired] == [("WARNING", command.command_id)]


def test_a_failed_command_is_logged_with_its_id(idle_kernel, tmp_path, caplog, django_capture_on_commit_callbacks):
    Path(idle_kernel.state_dir).rename(tmp_path / "gone")
    command = issue_committed(idle_kernel, "pause", django_capture_on_commit_callbacks)
    assert command.status == "pending"
    caplog.set_level(logging.INFO, logger="trading.services")

    command_fail(command=command, error="refused for the test", now=timezone.now())

    failed = [r for r in lines_naming(caplog, command.command_id) if "never to be sent" in r.getMessage()]
    assert [(r.levelname, r.command_id) for r in failed] == [("ERROR", command.command_id)]
    assert "refused for the test" in failed[0].getMessage()
