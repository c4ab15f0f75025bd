"""What the console says after a command (issue 14, item 7): the API's ``message``, the
admin's message and kernelctl's output carry the kernel's substance (a reload's versions and
sha256, a rejection's reason), against a real ``runkernel``. The kernel's side (the figures
themselves, a flatten's price and P&L by hand) is in tests/kernel/test_command_feedback.py.

Tests marked ``integration`` run a real ``manage.py runkernel`` subprocess."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.contrib import messages
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client

from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from trading import services
from trading.admin.command_buttons import command_fate
from trading.models import ControlCommand
from trading.services.command_feedback import result_feedback


def _running(state_dir: str, strategy: str) -> tuple[int, str]:
    """What status.json says runs: read from the file, not through the console."""
    st = json.loads((Path(state_dir) / "status.json").read_text())
    return st["strategies"][strategy]["version"], st["strategies"][strategy]["sha256"]


def test_the_one_line_for_each_fate():
    assert result_feedback(status="applied", error=None, detail={"message": "a: v1 (x) → v2 (y)"}) == \
        "applied: a: v1 (x) → v2 (y)"
    assert result_feedback(status="applied", error=None, detail={"note": "already running"}) == \
        "applied: already running"
    assert result_feedback(status="applied", error=None, detail={}) == "applied"
    assert result_feedback(status="rejected", error="unknown slot 'x'", detail=None) == "rejected: unknown slot 'x'"
    assert result_feedback(status="rejected", error=None, detail=None) == "rejected: the kernel gave no reason"
    assert result_feedback(status="delivered", error="", detail=None) == "delivered"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("audit_log_flushable")  # a transactional test flushes the tables at its end
def test_api_admin_and_kernelctl_say_what_the_kernel_reported(live_kernel):
    services.roles_setup()  # the roles' groups: an earlier transactional test may have flushed them
    olga = User.objects.create_user("olga", password="a-long-password-1")
    olga.groups.add(Group.objects.get(name="Operator"))
    api = Client()
    api.force_login(olga)
    response = api.post("/api/kernels/demo/reload?wait=5", {"strategy": "breakout"}, content_type="application/json")
    assert response.status_code == 202, response.content
    body = response.json()
    version, sha = _running(live_kernel.state_dir, "breakout")
    assert body["status"] == "applied"
    assert body["message"] == f"applied: breakout: unchanged, still v{version} ({sha[:12]})"
    assert body["detail"]["strategies"][0]["new_sha256"] == sha
    # The admin's message says the same.
    command = ControlCommand.objects.get(command_id=body["command_id"])
    assert command_fate(command) == (messages.SUCCESS, body["message"])

    refused = api.post("/api/kernels/demo/reload?wait=5", {"strategy": "nope"}, content_type="application/json")
    assert refused.json()["status"] == "rejected"
    assert refused.json()["message"] == "rejected: no strategy 'nope' in strategies/"
    level, text = command_fate(ControlCommand.objects.get(command_id=refused.json()["command_id"]))
    assert (level, text) == (messages.ERROR, "rejected: no strategy 'nope' in strategies/")

    out = io.StringIO()
    call_command("kernelctl", "reload", "--state-dir", live_kernel.state_dir, "--strategy", "breakout", "--wait",
                 stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert lines[-2:] == [f"breakout: unchanged, still v{version} ({sha[:12]})", "applied"], lines
