"""What the browser tests share: headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright), the console on pytest-django's live server with a real ``runkernel`` registered
as "night", a user of one role, and logging in."""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.contrib.auth.models import Group
from django.urls import reverse

from trading import services

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAPTOP = {"width": 1366, "height": 768}


@contextmanager
def chromium_page(monkeypatch, viewport: dict | None = None) -> Iterator:
    """A fresh page in a headless Chromium; a click waits up to a minute for the kernel's answer."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM reads are
    # still plain synchronous calls (Django's documented switch for this case).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = chromium.new_context(viewport=viewport) if viewport else chromium.new_context()
            context.set_default_timeout(60_000)
            yield context.new_page()
            context.close()
        finally:
            chromium.close()


def console_with_user(live_server, kernels, settings, django_user_model, *, username: str, role: str,
                      password: str):
    """(url, kernel process, Kernel row): a demo kernel registered as "night", and a staff user in ``role``."""
    settings.FORESIGHT_ADMIN_COMMAND_WAIT_S = 20.0
    proc = kernels(speed=600)
    kernel = services.kernel_register(name="night", state_dir=str(proc.state_dir))
    services.roles_setup()
    user = django_user_model.objects.create_user(username, password=password, is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return live_server.url, proc, kernel


def log_in(page, url: str, username: str, password: str) -> None:
    page.goto(url + reverse("admin:login"))
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))


def messages_on(page) -> list[str]:
    return [t.strip() for t in page.locator("ul.messagelist li").all_inner_texts()]
