"""The operator at 3am, in a real browser (issue 14): headless Chromium at 1,366×768 against
the console on pytest-django's live server, steering a real ``runkernel`` subprocess.

The dashboard fits the screen; a halt shows on the admin index's health strip and on a slot's
page (its effective state and the halt's reason, not "active"); the release asks for a reason
that lands in the audit log; a frozen kernel (SIGSTOP) turns the strip to "not reporting" and
a command to it asks for confirmation first.
"""
from __future__ import annotations

import os
import re
import signal

import pytest
from django.urls import reverse

from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from tests.integration.browser_console import LAPTOP, chromium_page, console_with_user, log_in, messages_on
from tests.support.waiting import wait_until
from trading.models import AuditEvent, ControlCommand, Slot

PASSWORD = "night-shift-3am"

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
    return console_with_user(live_server, kernels, settings, django_user_model, username="riley", role="Risk",
                             password=PASSWORD)


def strip_condition(page, kernel: str) -> str:
    return page.get_attribute(f'#fs-health [data-kernel="{kernel}"]', "data-condition")


def test_halt_shows_everywhere_and_release_asks_for_a_reason(console, page):
    url, proc, kernel = console
    log_in(page, url, "riley", PASSWORD)

    # (d) The dashboard at 1,366 px: no horizontal scroll, and each slot's P&L on screen.
    page.goto(url + reverse("admin:trading_kernel_dashboard", args=[kernel.pk]))
    page.wait_for_selector("#slots-table")
    assert page.evaluate("document.scrollingElement.scrollWidth") <= LAPTOP["width"]
    table = page.locator("#slots-table")
    assert table.evaluate("t => t.scrollWidth <= t.parentElement.clientWidth")
    for row in page.locator("#slots-table tbody tr").all():
        for cell in (row.locator("td").nth(3), row.locator("td").nth(4)):  # realised, unrealised
            box = cell.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= LAPTOP["width"]
            assert re.fullmatch(r"[+-]?[\d,]+\.\d{2}|—", cell.inner_text().strip()), cell.inner_text()

    # HALT from the dashboard.
    page.click("#halt-button")
    page.fill("#id_reason", "runaway orders at 3am")
    with page.expect_navigation():
        page.click("#confirm-button")
    assert messages_on(page) == ["HALT on night: applied"]
    # The HALT button became the halt itself; Release shows now.
    halted = page.inner_text("#halted-since")
    assert re.fullmatch(r"HALTED since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC by riley", halted), halted
    assert page.locator("#halt-button").count() == 0 and page.locator("#release-button").count() == 1

    # (a) The admin index: the health strip is red and names the halt and its reason.
    page.goto(url + reverse("admin:index"))
    assert strip_condition(page, "night") == "halted"
    assert page.get_attribute("#fs-health", "data-needs-human") == "true"
    assert "runaway orders at 3am" in page.inner_text("#fs-health")

    # (b) A slot's page: the effective state is the kernel's halt, with its reason; never "active".
    btc = Slot.objects.get(kernel=kernel, slot_id="btc-5m")
    assert btc.state == "active"  # the slot's own mirror still says so
    page.goto(url + reverse("admin:trading_slot_change", args=[btc.pk]))
    assert page.inner_text("#effective-state") == "HALTED (KERNEL)"
    assert page.inner_text("#slot-halt-reason") == "runaway orders at 3am"
    assert "ACTIVE" not in page.inner_text("#slot-tiles")
    assert page.get_attribute("#slot-audit-link", "href") == "/admin/trading/auditevent/?slot=btc-5m"

    # (c) Release through its confirmation page, with a reason.
    page.goto(url + reverse("admin:trading_kernel_change", args=[kernel.pk]))
    page.click("#release-button")
    page.wait_for_selector("#consequence")
    assert "stays paused" in page.inner_text("#consequence")
    page.click("#confirm-button")  # no reason: the browser refuses to send the form
    assert page.locator("#consequence").count() == 1
    assert not ControlCommand.objects.filter(action="release").exists()
    page.fill("#id_reason", "orders checked with the exchange")
    with page.expect_navigation():
        page.click("#confirm-button")
    said = messages_on(page)
    assert said[0].startswith("Release halt on night: applied") and "stays paused" in said[-1], said
    assert proc.wait(lambda s: s["state"] == "paused", what="paused after the release")["halt"]["engaged"] is False
    release = ControlCommand.objects.get(action="release")
    issued = AuditEvent.objects.get(action="command.issued", command_id=release.command_id)
    assert issued.actor == "riley" and issued.payload["args"]["reason"] == "orders checked with the exchange"
    assert page.locator("#release-button").count() == 0 and page.locator("#halt-button").count() == 1


def test_a_frozen_kernel_is_not_reporting_and_a_command_to_it_asks_first(console, page):
    url, proc, kernel = console
    log_in(page, url, "riley", PASSWORD)
    btc = Slot.objects.get(kernel=kernel, slot_id="btc-5m")
    slot_page = url + reverse("admin:trading_slot_change", args=[btc.pk])
    page.goto(slot_page)  # a page that reads the kernel's status.json: the index itself only reads the mirror
    assert page.inner_text("#effective-state") == "ACTIVE"
    page.goto(url + reverse("admin:index"))
    assert strip_condition(page, "night") == "running"

    os.killpg(proc.pid, signal.SIGSTOP)  # its session: the kernel and any child it runs
    try:
        frozen_at = proc.status()["heartbeat_at"]

        def not_reporting_on_the_slot_page() -> bool:
            page.goto(slot_page)
            return page.inner_text("#effective-state") == "NOT REPORTING (KERNEL)"

        wait_until(not_reporting_on_the_slot_page, timeout=120, poll=1.0,
                   what="the slot page to say the kernel is not reporting")
        assert proc.status()["heartbeat_at"] == frozen_at  # frozen indeed: no heartbeat since
        assert "not reporting" in page.inner_text("#slot-kernel")
        assert btc.state == "active"  # the slot's own last word, which the page does not repeat as its state

        # (a) The admin index: the strip is red and says so.
        page.goto(url + reverse("admin:index"))
        assert strip_condition(page, "night") == "not reporting"
        assert page.get_attribute("#fs-health", "data-needs-human") == "true"

        # A pause for the frozen kernel: a confirmation saying when it will apply, nothing sent yet.
        page.goto(url + reverse("admin:trading_kernel_dashboard", args=[kernel.pk]))
        page.click("#kernel-pause")
        page.wait_for_selector("#consequence")
        assert "applies only when the kernel returns" in page.inner_text("#consequence")
        assert not ControlCommand.objects.filter(action="pause").exists()
    finally:
        os.killpg(proc.pid, signal.SIGCONT)

    def reporting_again() -> bool:
        page.goto(slot_page)
        return page.inner_text("#effective-state") == "ACTIVE"

    wait_until(reporting_again, timeout=120, poll=1.0, what="the kernel reporting again after SIGCONT")
