"""Issue 14, items 8 and 9: the kernels' ``stale`` flag, ``/api/health/kernels`` for uptime
monitors (503 when a kernel is stale, halted or faulted), ``/api/health`` still the console's
own liveness, and API docs that need no other host."""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from tests.trading.admin_fixtures import kernel, slot_status, state_dir, write_kernel_status  # noqa: F401
from trading import services
from trading.models import Kernel

pytestmark = pytest.mark.django_db


def sync(kernel: Kernel, **status) -> None:
    write_kernel_status(Path(kernel.state_dir), **status)
    services.status_sync(kernel=kernel)


@pytest.fixture
def viewer(client):
    services.roles_setup()
    user = User.objects.create_user("vera", password="a-long-password-1")
    user.groups.add(Group.objects.get(name="Viewer"))
    client.force_login(user)
    return client


def test_kernels_carry_a_stale_flag(viewer, kernel, settings):
    settings.FORESIGHT_STALE_AFTER_S = 10
    assert [k["stale"] for k in viewer.get("/api/kernels").json()] == [False]
    assert viewer.get("/api/kernels/k1").json()["stale"] is False
    sync(kernel, heartbeat=timezone.now() - timedelta(seconds=60), tick=11)
    assert [k["stale"] for k in viewer.get("/api/kernels").json()] == [True]


def test_a_clean_stop_is_not_stale(viewer, kernel, settings):
    settings.FORESIGHT_STALE_AFTER_S = 10
    sync(kernel, state="stopped", heartbeat=timezone.now() - timedelta(minutes=5), tick=11)
    [k] = viewer.get("/api/kernels").json()
    assert (k["state"], k["stale"]) == ("stopped", False)
    assert Client().get("/api/health/kernels").status_code == 200


def test_kernel_health_is_200_when_all_is_well(client, kernel):
    response = client.get("/api/health/kernels")  # no login: for uptime monitors
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["kernels"] == [{"name": "k1", "state": "running", "condition": "running", "stale": False,
                                "halted": False, "heartbeat_age_s": body["kernels"][0]["heartbeat_age_s"],
                                "faulted_slots": 0, "problems": []}]


def test_kernel_health_is_503_for_a_halted_kernel_without_its_reason(client, kernel):
    sync(kernel, halt_reason="secret desk matter")
    response = client.get("/api/health/kernels")
    assert response.status_code == 503
    [k] = response.json()["kernels"]
    assert (k["halted"], k["condition"], k["problems"]) == (True, "halted", ["halted"])
    assert "secret desk matter" not in response.content.decode()


def test_kernel_health_is_503_for_a_stale_kernel(client, kernel, settings):
    settings.FORESIGHT_STALE_AFTER_S = 10
    sync(kernel, heartbeat=timezone.now() - timedelta(seconds=60), tick=11)
    response = client.get("/api/health/kernels")
    assert response.status_code == 503
    [k] = response.json()["kernels"]
    assert (k["stale"], k["condition"], k["problems"]) == (True, "not reporting", ["stale"])
    assert k["heartbeat_age_s"] >= 60


def test_kernel_health_is_503_for_a_faulted_slot(client, kernel):
    faulted = slot_status("eth-5m", "ETH/USDT").model_copy(update={"fault": "KeyError in on_candle"})
    sync(kernel, slots=[slot_status("btc-5m", "BTC/USDT"), faulted], tick=11)
    response = client.get("/api/health/kernels")
    assert response.status_code == 503
    [k] = response.json()["kernels"]
    assert (k["faulted_slots"], k["problems"]) == (1, ["faulted"])


def test_console_liveness_says_nothing_of_the_kernels(client, kernel):
    sync(kernel, halt_reason="down")
    response = client.get("/api/health")
    assert (response.status_code, response.json()) == (200, {"ok": True})


def test_api_docs_reference_no_other_host(client):
    response = client.get("/api/docs")
    assert response.status_code == 200
    page = response.content.decode()
    refs = re.findall(r"""<(?:script|link|img)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", page, re.I)
    assert refs, "the docs page loads no script or style sheet at all?"
    for ref in refs:
        parts = urlsplit(ref)
        assert not parts.scheme and not parts.netloc, ref  # relative or same-origin, never //cdn...
    # and nothing in the page's own text points a loader elsewhere
    assert not re.search(r"https?://(?!localhost|testserver)[a-z0-9.-]+\.[a-z]{2,}/[^\"']*\.(?:js|css)", page, re.I)
    # each one is a file the console ships (django-ninja's bundled Swagger UI)
    from django.contrib.staticfiles import finders
    for ref in refs:
        assert ref.startswith("/static/"), ref
        assert finders.find(ref.removeprefix("/static/")), ref
