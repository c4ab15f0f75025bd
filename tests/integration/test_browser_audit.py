"""The audit log in a real browser (issue 14, item 6): headless Chromium at 1,366×768 against
the console on pytest-django's live server and a real ``runkernel``. A slot paused from the
admin is ONE row of the audit log, with its outcome ("applied") and how long it took.
"""
from __future__ import annotations


import pytest
from django.urls import reverse

from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from tests.integration.browser_console import LAPTOP, chromium_page, console_with_user, log_in, messages_on
from trading.models import AuditEvent, ControlCommand, Slot

PASSWORD = "night-shift-4am"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("audit_log_flushable"),
]


@pytest.fixture
def page(monkeypatch):
    with chromium_page(monkeypatch, viewport=LAPTOP) as page:
        yield page


@pytest.fixture
def console(live_server, kernels, settings, django_user_model):
    return console_with_user(live_server, kernels, settings, django_user_model, username="olga", role="Operator",
                             password=PASSWORD)


def test_a_slot_pause_is_one_row_with_its_outcome_and_duration(console, page):
    url, proc, kernel = console
    log_in(page, url, "olga", PASSWORD)

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
