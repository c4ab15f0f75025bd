"""The health strip brings a stale mirror of a local kernel up to date before it reads it:
with no sync loop (no ``syncstatus --loop``, no Celery beat) a healthy kernel is not shown as
"not reporting" on the admin index. A real ``runkernel`` process; the console's test client."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.trading.admin_fixtures import login, no_kernel_to_wait_for  # noqa: F401 (fixtures)
from trading import selectors
from trading.models import Kernel

pytestmark = pytest.mark.django_db


def strip_text(response) -> str:
    assert response.status_code == 200
    found = re.search(r'<div id="fs-health"(.*?)</div>', response.content.decode(), re.S)
    assert found, "no health strip on the page"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(0)).split())


def test_the_index_strip_syncs_a_stale_mirror_of_a_running_local_kernel(login, live_kernel, settings):
    settings.FORESIGHT_STALE_AFTER_S = 30
    # The mirror as a console with no sync loop leaves it: last written an hour ago.
    hour_ago = timezone.now() - timedelta(hours=1)
    old_status = {**live_kernel.status, "heartbeat_at": hour_ago.isoformat()}
    Kernel.objects.filter(pk=live_kernel.pk).update(heartbeat_at=hour_ago, status_synced_at=hour_ago,
                                                    status=old_status)
    assert selectors.console_health()["kernels"][0]["condition"] == "not reporting"  # what the strip read before

    said = strip_text(login("Viewer").get(reverse("admin:index")))

    assert "demo" in said and "RUNNING" in said and "NOT REPORTING" not in said
    kernel = Kernel.objects.get(pk=live_kernel.pk)
    assert kernel.status_synced_at > hour_ago and kernel.heartbeat_at > hour_ago
    assert re.search(r"heartbeat \d+ s ago", said)


def test_the_strip_leaves_another_hosts_kernel_to_that_host(login, live_kernel):
    # Its files happen to be readable here, but its mirror is its host's worker's to write.
    hour_ago = timezone.now() - timedelta(hours=1)
    Kernel.objects.filter(pk=live_kernel.pk).update(host="host-b.invalid", heartbeat_at=hour_ago,
                                                    status_synced_at=hour_ago)

    said = strip_text(login("Viewer").get(reverse("admin:index")))

    assert "NOT REPORTING" in said
    assert Kernel.objects.get(pk=live_kernel.pk).status_synced_at == hour_ago
