"""The console's admin site as a whole: every model registered, what a viewer may do, and GET
pages that read the kernel's latest word without writing while the mirror is fresh."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.trading.admin_fixtures import (  # noqa: F401 (fixtures)
    kernel, kernel_url, login, no_kernel_to_wait_for, slot, slot_form, slot_url, state_dir, write_kernel_status,
)
from trading.models import ApiToken, AuditEvent, ControlCommand, Kernel, Slot

pytestmark = pytest.mark.django_db

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def test_importing_the_admin_package_registers_every_console_model():
    for model in (Kernel, Slot, ControlCommand, AuditEvent, ApiToken):
        assert admin.site.is_registered(model), model.__name__


def test_viewers_see_everything_and_change_nothing(login, slot):
    client = login("Viewer")
    for model in ("kernel", "slot", "controlcommand", "auditevent"):
        assert client.get(reverse(f"admin:trading_{model}_changelist")).status_code == 200, model
    page = client.get(reverse("admin:trading_kernel_change", args=[slot.kernel.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.get(kernel_url("dashboard", slot.kernel)).status_code == 200
    assert client.post(reverse("admin:trading_slot_change", args=[slot.pk]), slot_form(slot)).status_code == 403


def test_get_pages_write_nothing_while_the_mirror_is_fresh(login, kernel, slot):
    # A newer status.json, but a mirror synced after it was written (a sync time ahead of the
    # clock: fresh however slow the machine): a page view reads, it does not sync.
    write_kernel_status(Path(kernel.state_dir), tick=14, halt_reason="not mirrored yet")
    Kernel.objects.filter(pk=kernel.pk).update(status_synced_at=timezone.now() + timedelta(hours=1))
    client = login("Risk")
    pages = [
        reverse("admin:index"),  # its health strip syncs a stale mirror, and only a stale one
        reverse("admin:trading_kernel_changelist"),
        reverse("admin:trading_kernel_change", args=[kernel.pk]),
        kernel_url("dashboard", kernel),
        kernel_url("dashboard", kernel) + "?fragment=1",
        kernel_url("halt", kernel),
        reverse("admin:trading_slot_changelist"),
        reverse("admin:trading_slot_change", args=[slot.pk]),
        slot_url(slot, "slot.flatten"),
        reverse("admin:trading_controlcommand_changelist"),
        reverse("admin:trading_auditevent_changelist"),
    ]
    for url in pages:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200, url
        writes = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(WRITES)]
        assert writes == [], url
    kernel.refresh_from_db()
    assert (kernel.tick, kernel.halt_engaged) == (10, False)
    assert not (Path(kernel.state_dir) / "control.json").exists()


def test_get_pages_show_the_kernels_latest_word_once_status_json_moved(login, kernel, slot):
    write_kernel_status(Path(kernel.state_dir), tick=15, halt_reason="exchange is misbehaving")
    client = login("Viewer")
    page = client.get(reverse("admin:trading_kernel_change", args=[kernel.pk])).content.decode()
    assert 'id="halt-banner"' in page and "exchange is misbehaving" in page
    kernel.refresh_from_db()
    assert (kernel.tick, kernel.halt_engaged) == (15, True)
