"""Issue 14, item 3 on the kernel's own page: its read-only times (heartbeat, started, halt
since, halt requested, status synced, created) to the millisecond and marked UTC, as on the
console's other pages, whatever the server's time zone."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.trading.admin_fixtures import kernel, login, no_kernel_to_wait_for, state_dir  # noqa: F401 (fixtures)
from trading.models import Kernel

pytestmark = pytest.mark.django_db

BERLIN_WINTER = dt_timezone(timedelta(hours=1))


def readonly(page: str, field: str) -> str:
    found = re.search(rf'field-{field}\b.*?<div class="readonly">(.*?)</div>', page, re.S)
    assert found, f"no read-only {field} on the page"
    return found.group(1).strip()


def test_the_kernel_page_shows_its_times_with_seconds_in_utc(login, kernel, settings):
    settings.TIME_ZONE = "Europe/Berlin"  # the admin's own format would show Berlin's wall clock
    Kernel.objects.filter(pk=kernel.pk).update(
        heartbeat_at=datetime(2026, 1, 5, 10, 6, 7, 891000, tzinfo=BERLIN_WINTER),
        halt_since=datetime(2026, 1, 5, 9, 0, 1, 5000, tzinfo=dt_timezone.utc),
        halt_requested_at=datetime(2026, 1, 5, 8, 59, 59, 999000, tzinfo=dt_timezone.utc),
        created_at=datetime(2025, 12, 31, 23, 30, 0, tzinfo=dt_timezone.utc),
        status={**kernel.status, "started_at": "2026-01-05T07:00:00.250Z"},
        # synced "after" status.json was written: the page reads the mirror, it does not resync
        status_synced_at=timezone.now() + timedelta(hours=1),
    )
    page = login("Viewer").get(reverse("admin:trading_kernel_change", args=[kernel.pk])).content.decode()
    assert readonly(page, "heartbeat_time") == "2026-01-05 09:06:07.891 UTC"
    assert readonly(page, "halt_since_time") == "2026-01-05 09:00:01.005 UTC"
    assert readonly(page, "halt_requested_time") == "2026-01-05 08:59:59.999 UTC"
    assert readonly(page, "created_time") == "2025-12-31 23:30:00.000 UTC"
    assert readonly(page, "started_time") == "2026-01-05 07:00:00.250 UTC"
    assert readonly(page, "status_synced_time").endswith(" UTC")
    assert "Heartbeat (UTC)" in page and "Halt since (UTC)" in page  # the labels say so too


def test_times_the_kernel_never_reported_show_a_dash(login, kernel):
    Kernel.objects.filter(pk=kernel.pk).update(halt_since=None, halt_requested_at=None,
                                               status={"state": "running"},
                                               status_synced_at=timezone.now() + timedelta(hours=1))
    page = login("Viewer").get(reverse("admin:trading_kernel_change", args=[kernel.pk])).content.decode()
    assert readonly(page, "halt_since_time") == "—"
    assert readonly(page, "started_time") == "—"
    assert readonly(page, "halt_requested_time") == "—"
