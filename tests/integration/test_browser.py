"""An operator's night, in a real browser: headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright) against the console on pytest-django's live server, steering a real
``runkernel`` subprocess. Log in, pause a slot, flatten one (confirming), HALT the kernel
(confirming), and find the outcomes in the audit log.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from trading import services
from trading.models import ControlCommand, Slot

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "night-shift-2am"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("audit_log_flushable"),
]


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM reads are
    # still plain synchronous calls (Django's documented switch for this case).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    context.set_default_timeout(60_000)  # a click waits up to a few seconds for the kernel's answer
    yield context.new_page()
    context.close()


@pytest.fixture
def console(live_server, kernels, settings, django_user_model):
    """The console on the live server, a demo kernel registered with it, and a Risk user."""
    settings.FORESIGHT_ADMIN_COMMAND_WAIT_S = 20.0
    proc = kernels(speed=600)
    kernel = services.kernel_register(name="night", state_dir=str(proc.state_dir))
    services.roles_setup()
    user = django_user_model.objects.create_user("riley", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Risk"))
    return live_server.url, proc, kernel


def messages_on(page) -> list[str]:
    return [t.strip() for t in page.locator("ul.messagelist li").all_inner_texts()]


def test_an_operator_pauses_flattens_and_halts_then_reads_the_audit_log(console, page):
    url, proc, kernel = console

    page.goto(url + reverse("admin:login"))
    page.fill("#id_username", "riley")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))

    # Pause a slot from its page.
    btc = Slot.objects.get(kernel=kernel, slot_id="btc-5m")
    page.goto(url + reverse("admin:trading_slot_change", args=[btc.pk]))
    with page.expect_navigation():
        page.click("#slot-pause")
    assert messages_on(page) == ["Pause on night/btc-5m: applied"]
    assert proc.slot(proc.status(), "btc-5m")["state"] == "paused"
    pause = ControlCommand.objects.get(action="slot.pause", slot_id="btc-5m")

    # Flatten one (a slot holding a position if the demo has bought something yet): confirm first.
    held = [s["id"] for s in proc.status()["slots"] if s["position"]["qty"] > 0]
    target = Slot.objects.get(kernel=kernel, slot_id=(held or ["eth-5m"])[0])
    page.goto(url + reverse("admin:trading_slot_change", args=[target.pk]))
    page.click("#slot-flatten")
    page.wait_for_selector("#consequence")
    assert f"sells the whole position of night/{target.slot_id} at market" in page.inner_text("#consequence")
    assert not ControlCommand.objects.filter(action="slot.flatten").exists()
    with page.expect_navigation():
        page.click("#confirm-button")
    (flattened,) = messages_on(page)  # with the fill price and P&L, or "no position to flatten"
    assert flattened.startswith(f"Flatten on night/{target.slot_id}: applied"), flattened
    flat = proc.wait(lambda s: proc.slot(s, target.slot_id)["position"]["qty"] == 0
                     and proc.slot(s, target.slot_id)["state"] == "paused", what="the flattened slot")
    assert proc.slot(flat, target.slot_id)["position"]["qty"] == 0

    # HALT from the dashboard: the confirmation names the consequence.
    page.goto(url + reverse("admin:trading_kernel_dashboard", args=[kernel.pk]))
    page.wait_for_selector("#slots-table")
    assert page.locator("#halt-banner").count() == 0
    page.click("#halt-button")
    page.wait_for_selector("#consequence")
    assert ("stops every strategy and cancels resting orders on night; trading stays stopped until "
            "a Risk user releases it") in page.inner_text("#consequence")
    page.fill("#id_reason", "browser drill")
    with page.expect_navigation():
        page.click("#confirm-button")
    assert messages_on(page) == ["HALT on night: applied"]
    assert "browser drill" in page.inner_text("#halt-banner")  # back on the dashboard, halted
    assert proc.status()["state"] == "halted"

    # The audit log shows each command and what the kernel made of it.
    page.goto(url + reverse("admin:trading_auditevent_changelist") + f"?events=all&q={pause.command_id}")
    rows = page.locator("#result_list tbody tr").all_inner_texts()
    assert any("command.issued" in r and "riley" in r for r in rows), rows
    assert any("command.applied" in r and "btc-5m" in r and "applied" in r for r in rows), rows
    page.goto(url + reverse("admin:trading_auditevent_changelist") + "?events=all&kernel_name=night&action=halt.observed")
    rows = page.locator("#result_list tbody tr").all_inner_texts()
    assert len(rows) == 1 and "browser drill" in rows[0], rows
