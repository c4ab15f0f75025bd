"""Issue 13, item 7: a content security policy (django-csp) — scripts and style sheets only
from the console itself, no inline script — and the admin still works under it: in a real
browser the dashboard's self-refresh runs and no page the operators use trips the policy,
while an injected inline handler is refused."""
from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from tests.integration.browser_console import CHROMIUM, CHROMIUM_ARGS
from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from trading import services

PASSWORD = "night-shift-2am"


def policy(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] if " " in d else "" for d in
            (part.strip() for part in header.split(";")) if d}


@pytest.mark.django_db
def test_every_page_carries_a_policy_that_runs_no_inline_script(admin_client, idle_kernel):
    for url in (reverse("admin:index"), reverse("admin:trading_kernel_dashboard", args=[idle_kernel.pk]),
                reverse("admin:trading_apitoken_changelist"), "/api/docs"):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        directives = policy(response)
        assert directives["script-src"] == "'self'" and directives["default-src"] == "'self'", url
        assert "unsafe-inline" not in directives["style-src"] and directives["object-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        body = response.content.decode()
        inline = [s for s in re.findall(r"<script\b([^>]*)>", body) if "src=" not in s and "application/json" not in s]
        assert inline == [], (url, inline)


@pytest.fixture
def page(monkeypatch):
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is required for the browser tests (scripts/system-deps.sh)")
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs a loop in this thread
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context()
        context.set_default_timeout(30_000)
        # Every refusal of the policy, as the page sees it (an init script is not subject to it).
        context.add_init_script("""
            window.__violations = [];
            document.addEventListener('securitypolicyviolation',
                e => window.__violations.push(e.effectiveDirective + ' ' + (e.blockedURI || 'inline')));
        """)
        try:
            yield context.new_page()
        finally:
            browser.close()


@pytest.mark.integration
@pytest.mark.usefixtures("audit_log_flushable")
def test_the_admin_works_under_the_policy_and_an_injected_handler_does_not_run(live_server, page, idle_kernel,
                                                                               django_user_model):
    services.roles_setup()
    user = django_user_model.objects.create_user("riley", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Risk"))
    url = live_server.url

    page.goto(url + reverse("admin:login"))
    page.fill("#id_username", "riley")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    assert page.evaluate("window.__violations") == []

    for path in (reverse("admin:trading_kernel_change", args=[idle_kernel.pk]), reverse("admin:trading_apitoken_add")):
        page.goto(url + path)
        assert page.evaluate("window.__violations") == [], path

    page.goto(url + reverse("admin:trading_kernel_dashboard", args=[idle_kernel.pk]))
    # The console's style sheet is applied, and the refresh script (a static file) runs.
    assert page.evaluate("[...document.styleSheets].some(s => s.href && s.href.includes('trading/console.css')"
                         " && s.cssRules.length > 10)")
    page.locator("#refresh-state", has_text=re.compile(r"^updated")).wait_for()
    assert page.evaluate("window.__violations") == []

    # What the policy is for: markup that gets in cannot run script.
    page.evaluate("document.body.insertAdjacentHTML('beforeend', "
                  "'<img src=\"/no-such-image.png\" onerror=\"window.__pwned = true\">')")
    page.wait_for_function("() => window.__violations.length > 0")
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("window.__violations")[0].startswith("script-src")
