"""The audit log in a real browser (issue 14, item 6): headless Chromium at 1,366×768 against
the console on pytest-django's live server and a real ``runkernel``. A slot paused from the
admin is ONE row of the audit log, with its outcome ("applied") and how long it took.
"""
from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from tests.integration.test_browser import CHROMIUM, CHROMIUM_ARGS, messages_on
from trading import services
from trading.models import AuditEvent, ControlCommand, Slot

PASSWORD = "night-shift-4am"
SCREEN = {"width": 1366, "height": 768}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("audit_log_flushable"),
]


@pytest.fixture
def page(monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the test's ORM reads beside Playwright's loop
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = chromium.new_context(viewport=SCREEN)
            context.set_default_timeout(60_000)
            yield context.new_page()
            context.close()
        finally:
            chromium.close()


@pytest.fixture
def console(live_server, kernels, settings, django_user_model):
    settings.FORESIGHT_ADMIN_COMMAND_WAIT_S = 20.0
    proc = kernels(speed=600)
    kernel = services.kernel_register(name="night", state_dir=str(proc.state_dir))
    services.roles_setup()
    user = django_user_model.objects.create_user("olga", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Operator"))
    return live_server.url, proc, kernel


def test_a_slot_pause_is_one_row_with_its_outcome_and_duration(console, page):
    url, proc, kernel = console
    page.goto(url + reverse("admin:login"))
    page.fill("#id_username", "olga")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))

    btc = Slot.objects.get(kernel=kernel, slot_id="btc-5m")
    page.goto(url + reverse("admin:trading_slot_change", args=[btc.pk]))
    with page.expect_navigation():
        page.click("#slot-pause")
    assert any("applied" in m for m in messages_on(page)), messages_on(page)
    pause = ControlCommand.objects.get(action="slot.pause", slot_id="btc-5m")
    assert pause.status == "applied"
    # The log holds several events of it (issued, applied), and shows it once.
    assert AuditEvent.objects.filter(command_id=pause.command_id).count() >= 2

    page.goto(url + reverse("admin:trading_auditevent_changelist") + "?slot=btc-5m")
    rows = page.locator("#result_list tbody tr").all_inner_texts()
    assert len(rows) == 1, rows
    (row,) = rows
    cells = [c.strip() for c in page.locator("#result_list tbody tr td, #result_list tbody tr th").all_inner_texts()]
    assert "slot.pause" in cells and "btc-5m" in cells and "night" in cells and "olga" in cells, cells
    assert "applied" in cells, cells
    took = (pause.resolved_at - AuditEvent.objects.get(action="command.issued", command_id=pause.command_id).at)
    assert f"{took.total_seconds():.1f} s" in cells, (cells, took)
    # Its time to the second, in UTC.
    issued_at = AuditEvent.objects.get(action="command.issued", command_id=pause.command_id).at
    assert issued_at.strftime("%Y-%m-%d %H:%M:%S") in row, row
    # The kernel's page links here with ?kernel=: the same row among the kernel's actions.
    page.goto(url + reverse("admin:trading_auditevent_changelist") + "?kernel=night&action=slot.pause")
    assert len(page.locator("#result_list tbody tr").all_inner_texts()) == 1
