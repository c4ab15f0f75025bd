"""trading.services.kernels and kernel_records: registration, stale heartbeats, the console's sync round."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.trading.admin_fixtures import write_kernel_status
from tests.trading.service_calls import audit_count
from trading import services
from trading.models import AuditEvent, Kernel

pytestmark = pytest.mark.django_db


def test_stale_heartbeat_is_audited_once_per_episode(idle_kernel, caplog, settings):
    settings.FORESIGHT_STALE_AFTER_S = 10.0  # the default, whatever the shell says
    first = timezone.now() - timedelta(seconds=60)
    Kernel.objects.filter(pk=idle_kernel.pk).update(heartbeat_at=first)

    assert services.kernel_stale_check() == [idle_kernel]
    assert services.kernel_stale_check() == [idle_kernel]
    assert audit_count("kernel.stale") == 1
    assert any(r.levelname == "ERROR" and "stale" in r.getMessage() for r in caplog.records)

    Kernel.objects.filter(pk=idle_kernel.pk).update(heartbeat_at=timezone.now())
    assert services.kernel_stale_check() == []
    Kernel.objects.filter(pk=idle_kernel.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=30))
    services.kernel_stale_check()
    assert audit_count("kernel.stale") == 2  # a new episode


def test_kernel_register_is_idempotent(tmp_path):
    a = services.kernel_register(name="k1", state_dir=str(tmp_path))
    b = services.kernel_register(name="k1", state_dir=str(tmp_path))
    assert a.pk == b.pk and audit_count("kernel.registered") == 1
    with pytest.raises(services.Conflict):
        services.kernel_register(name="k2", state_dir=str(tmp_path))
    with pytest.raises(services.ServiceError):
        services.kernel_register(name="bad name!", state_dir=str(tmp_path / "x"))


def test_the_stale_limit_is_the_setting(idle_kernel, settings):
    Kernel.objects.filter(pk=idle_kernel.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))

    settings.FORESIGHT_STALE_AFTER_S = 120.0
    assert services.kernel_stale_check() == []
    settings.FORESIGHT_STALE_AFTER_S = 30.0
    assert services.kernel_stale_check() == [idle_kernel]
    assert AuditEvent.objects.get(action="kernel.stale").payload["max_age_s"] == 30.0
    assert services.kernel_stale_check(max_age_s=90.0) == []  # a caller's own limit still wins


def test_kernels_sync_syncs_every_kernel_and_flags_the_stale(idle_kernel, tmp_path, caplog):
    live = tmp_path / "live"
    live.mkdir()
    write_kernel_status(live)
    services.kernel_register(name="live", state_dir=str(live))
    Kernel.objects.filter(pk=idle_kernel.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    # A row no path can be built from: its sync fails, the others' must not. (PostgreSQL
    # refuses a NUL in text, so there such a row cannot exist.)
    broken = connection.vendor == "sqlite"
    if broken:
        Kernel.objects.create(name="broken", state_dir=str(tmp_path / "bro\0ken"))

    summaries = services.kernels_sync(stale_after_s=10.0)

    assert summaries[0] == {"spool_flushed": 0}
    assert sorted((s["kernel"], s["status"]) for s in summaries[1:]) == [("idle", "missing"), ("live", "ok")]
    assert any("status sync of kernel broken failed" in r.getMessage() for r in caplog.records) == broken
    assert audit_count("kernel.stale", kernel_name="idle") == 1
