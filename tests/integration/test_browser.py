"""An operator's night, in a real browser: headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright) against the console on pytest-django's live server, steering a real
``runkernel`` subprocess. Log in, pause a slot, flatten one (confirming), HALT the kernel
(confirming), and find the outcomes in the audit log.
"""
from __future__ import annotations


import pytest
from django.urls import reverse

from tests.integration.browser_console import chromium_page, console_with_user, log_in, messages_on
from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from trading.models import ControlCommand, Slot

PASSWORD = "night-shift-2am"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("audit_log_flushable"),
]


@pytest.fixture
def page(monkeypatch):
    with chromium_page(monkeypatch) as page:
        yield page


@pytest.fixture
def console(live_server, kernels, settings, django_user_model):
    """The console on the live server, a demo kernel registered with it, and a Risk user."""
    return console_with_user(live_server, kernels, settings, django_user_model, username="riley", role="Risk",
                             password=PASSWORD)


def test_an_operator_pauses_flattens_and_halts_then_reads_the_audit_log(console, page):
    url, proc, kernel = console

    log_in(page, url, "riley", PASSWORD)

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
