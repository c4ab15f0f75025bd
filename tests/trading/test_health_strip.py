"""Issue 14, item 1: the health strip on every admin page — each kernel's state, halt (since,
by whom, why), heartbeat age, clean stop / not reporting / halted, faulted slots, drift and
deploys — red when anything needs a human. Real status.json files, read by the real sync."""
from __future__ import annotations

import re
from datetime import timedelta, timezone as dt_timezone
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.trading.admin_fixtures import (  # noqa: F401 (fixtures)
    kernel, kernel_url, login, no_kernel_to_wait_for, slot, slot_status, state_dir, write_kernel_status,
)
from trading import selectors, services
from trading.models import Kernel

pytestmark = pytest.mark.django_db


def strip(response) -> str:
    """The strip's HTML (it is one element, closed before the page's content)."""
    assert response.status_code == 200
    page = response.content.decode()
    found = re.search(r'<div id="fs-health"(.*?)</div>', page, re.S)
    assert found, "no health strip on the page"
    assert page.count('id="fs-health"') == 1
    return found.group(0)


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def is_red(html: str) -> bool:
    return "fs-health-red" in html.split(">", 1)[0]


def sync(kernel: Kernel, **status) -> Kernel:
    write_kernel_status(Path(kernel.state_dir), **status)
    services.status_sync(kernel=kernel)
    kernel.refresh_from_db()
    return kernel


def pages(kernel: Kernel, slot) -> list[str]:
    return [reverse("admin:index"), reverse("admin:trading_slot_change", args=[slot.pk]),
            reverse("admin:trading_auditevent_changelist"), reverse("admin:trading_kernel_changelist")]


def test_every_admin_page_shows_the_strip_and_nothing_wrong_is_not_red(login, kernel, slot):
    client = login("Viewer")
    for url in pages(kernel, slot):
        html = strip(client.get(url))
        assert not is_red(html), url
        assert "k1" in text(html) and "RUNNING" in text(html), url
        assert re.search(r"heartbeat \d+ s ago", text(html)), url


def test_a_halted_kernel_is_red_with_since_by_and_why_on_every_page(login, kernel, slot):
    sync(kernel, halt_reason="runaway orders on btc")
    client = login("Viewer")
    for url in pages(kernel, slot):
        html = strip(client.get(url))
        assert is_red(html), url
        said = text(html)
        assert "HALTED" in said and "runaway orders on btc" in said, url
        since = kernel.halt_since.astimezone(dt_timezone.utc)
        assert since.strftime("%Y-%m-%d %H:%M:%S") in said, url
        assert "by the kernel" in said  # no operator's halt.engaged in the audit log


def test_the_halt_names_the_operator_who_engaged_it(login, kernel):
    login("Operator").post(kernel_url("halt", kernel), {"confirm": "yes", "reason": "fat finger"})
    sync(kernel, halt_reason="fat finger")
    said = text(strip(login("Viewer").get(reverse("admin:index"))))
    assert "by operator: fat finger" in said


def test_a_stale_heartbeat_says_not_reporting_in_red(login, kernel, settings):
    settings.FORESIGHT_STALE_AFTER_S = 10
    sync(kernel, heartbeat=timezone.now() - timedelta(seconds=60), tick=11)
    html = strip(login("Viewer").get(reverse("admin:index")))
    assert is_red(html)
    assert "NOT REPORTING" in text(html) and "RUNNING" not in text(html)
    assert re.search(r"heartbeat (6\d) s ago", text(html))


def test_a_clean_stop_says_stopped_and_is_not_red(login, kernel, settings):
    settings.FORESIGHT_STALE_AFTER_S = 10
    sync(kernel, state="stopped", heartbeat=timezone.now() - timedelta(minutes=5), tick=11)
    html = strip(login("Viewer").get(reverse("admin:index")))
    assert "STOPPED" in text(html)
    assert "not reporting" not in text(html).lower()
    assert not is_red(html)


def test_faulted_slots_turn_the_strip_red(login, kernel):
    faulted = slot_status("btc-5m", "BTC/USDT").model_copy(update={"fault": "ZeroDivisionError in on_candle"})
    sync(kernel, slots=[faulted, slot_status("eth-5m", "ETH/USDT")], tick=11)
    html = strip(login("Viewer").get(reverse("admin:index")))
    assert is_red(html) and "1 faulted slot" in text(html)


def test_drift_and_a_running_canary_are_shown(login, kernel):
    now = timezone.now().isoformat()
    sync(kernel, tick=11, strategies={"ema_cross": {
        "version": 1, "sha256": "a" * 64, "loaded_at": now, "previous": None,
        "working_tree": {"sha256": "b" * 64, "differs": True},
        "canary": {"version": 2, "sha256": "c" * 64, "slots": ["btc-5m"], "since": now,
                   "budget": {"cycles": 10, "faults": 1}, "state": "running", "counts": {"cycles": 1, "faults": 0}},
    }})
    health = selectors.console_health()["kernels"][0]
    assert health["drift"] == ["ema_cross"]
    assert [(d["kind"], d["strategy"], d["version"]) for d in health["deploys"]] == [("canary", "ema_cross", 2)]
    said = text(strip(login("Viewer").get(reverse("admin:index"))))
    assert "drift: ema_cross" in said and "canary ema_cross v2" in said


def test_the_strip_writes_nothing_while_fresh_and_is_not_shown_to_the_anonymous(client, login, kernel, settings):
    settings.FORESIGHT_STALE_AFTER_S = 10
    sync(kernel, heartbeat=timezone.now() - timedelta(seconds=60), tick=11)
    # Synced after status.json was written (a sync time ahead of the clock: fresh however slow
    # the machine): the strip reads the mirror; a stale one it syncs (test_health_strip_sync.py).
    Kernel.objects.filter(pk=kernel.pk).update(status_synced_at=timezone.now() + timedelta(hours=1))
    from trading.models import AuditEvent
    before = (AuditEvent.objects.count(), Kernel.objects.get().status_synced_at)
    strip(login("Viewer").get(reverse("admin:index")))
    assert (AuditEvent.objects.count(), Kernel.objects.get().status_synced_at) == before
    client.logout()
    assert 'id="fs-health"' not in client.get(reverse("admin:login")).content.decode()


def test_the_strip_has_no_inline_script_or_style(login, kernel):
    html = strip(login("Viewer").get(reverse("admin:index")))
    assert "<script" not in html and "style=" not in html
