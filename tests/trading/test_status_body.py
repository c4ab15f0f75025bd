"""Issue 16, target 3: GET /api/kernels/{name} serves the mirrored status as prepared bytes with
an ETag (304 to a client that has it), never older than status.json, and a token verified once
per TOKEN_CACHE_S per worker is still refused once revoked (trading/cached_token_auth.py)."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.support.waiting import wait_until
from tests.trading.admin_fixtures import kernel, slot_status, state_dir, write_kernel_status  # noqa: F401
from trading import services
from trading.cached_token_auth import TOKEN_CACHE_S
from trading.models import ApiToken, Kernel

pytestmark = pytest.mark.django_db


@pytest.fixture
def bearer():
    user = User.objects.create_superuser("olga", "olga@localhost", "a-long-password-1")
    token, raw = services.token_create(user=user, name="dash")
    return token, Client(HTTP_AUTHORIZATION=f"Bearer {raw}")


def test_the_body_is_the_status_the_mirror_holds(kernel, bearer):
    _, client = bearer
    written = json.loads((Path(kernel.state_dir) / "status.json").read_text())  # what the kernel wrote
    response = client.get("/api/kernels/k1")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert body["status"] == written
    assert body["status"] == Kernel.objects.get(name="k1").status
    assert (body["name"], body["tick"], body["state"]) == ("k1", written["tick"], "running")


def test_etag_answers_304_until_the_status_moves(kernel, bearer):
    _, client = bearer
    first = client.get("/api/kernels/k1")
    etag = first["ETag"]
    assert etag.startswith('W/"') and etag.endswith('"')
    again = client.get("/api/kernels/k1", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag
    assert client.get("/api/kernels/k1", HTTP_IF_NONE_MATCH='W/"someone-elses"').status_code == 200
    assert client.get("/api/kernels/k1", HTTP_IF_NONE_MATCH=f'W/"x", {etag}').status_code == 304

    write_kernel_status(Path(kernel.state_dir), tick=77)  # the kernel's next word
    moved = client.get("/api/kernels/k1", HTTP_IF_NONE_MATCH=etag)
    assert moved.status_code == 200
    assert moved["ETag"] != etag
    assert json.loads(moved.content)["status"]["tick"] == 77
    assert json.loads(moved.content)["tick"] == 77


def test_unchanged_mirror_serves_the_same_bytes(kernel, bearer):
    _, client = bearer
    client.get("/api/kernels/k1")  # the sync, if one is due
    a = client.get("/api/kernels/k1")
    b = client.get("/api/kernels/k1")
    assert a["ETag"] == b["ETag"]
    assert json.loads(a.content)["status"] == json.loads(b.content)["status"]


def test_a_kernel_going_stale_changes_the_body(kernel, bearer, settings):
    _, client = bearer
    settings.FORESIGHT_STALE_AFTER_S = 10
    fresh = client.get("/api/kernels/k1")
    assert json.loads(fresh.content)["stale"] is False
    Kernel.objects.filter(pk=kernel.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    later = client.get("/api/kernels/k1", HTTP_IF_NONE_MATCH=fresh["ETag"])
    assert later.status_code == 200
    assert json.loads(later.content)["stale"] is True


def test_a_fresh_call_reads_neither_the_token_nor_the_status_column(kernel, bearer):
    _, client = bearer
    client.get("/api/kernels/k1")
    client.get("/api/kernels/k1")  # token verified and body prepared in this process
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/kernels/k1")
    assert response.status_code == 200
    sql = [q["sql"] for q in queries.captured_queries]
    assert sql, "the kernel's row is read on every call"
    assert not [q for q in sql if "apitoken" in q.lower()]
    status_column = re.compile(r'(^|[\s,."])status($|[\s,"])')
    assert not [q for q in sql if "trading_kernel" in q and status_column.search(q.split(" FROM ")[0])]


def test_another_hosts_kernel_is_synced_once_then_served_from_its_mirror(kernel, bearer, monkeypatch):
    _, client = bearer
    monkeypatch.setattr("trading.status_body.SYNC_AT_LEAST_EVERY_S", 3600.0)  # no second sync in this test
    Kernel.objects.filter(pk=kernel.pk).update(host="host-b.invalid")  # its worker mirrors it, not us
    (Path(kernel.state_dir) / "status.json").unlink()  # and its files are not on this machine
    first = client.get("/api/kernels/k1")
    assert json.loads(first.content)["sync"]["status"] == "remote"
    second = client.get("/api/kernels/k1")
    assert json.loads(second.content)["sync"]["status"] == "fresh"
    assert json.loads(second.content)["status"] == Kernel.objects.get(pk=kernel.pk).status
    assert client.get("/api/kernels/k1", HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304


def test_a_local_kernels_missing_status_is_said_on_every_call(kernel, bearer, monkeypatch):
    _, client = bearer
    monkeypatch.setattr("trading.status_body.SYNC_AT_LEAST_EVERY_S", 3600.0)
    (Path(kernel.state_dir) / "status.json").unlink()
    Kernel.objects.filter(pk=kernel.pk).update(status_synced_at=None)
    assert [json.loads(client.get("/api/kernels/k1").content)["sync"]["status"] for _ in range(2)] == [
        "missing", "missing"]


def test_a_cached_token_still_spends_its_quota(kernel, bearer, settings):
    _, client = bearer
    settings.FORESIGHT_API_RATE = "3/m"
    assert [client.get("/api/kernels/k1").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert client.get("/api/tokens").status_code == 429  # one quota per token, whichever endpoint


def test_unknown_kernel_is_404(kernel, bearer):
    _, client = bearer
    assert client.get("/api/kernels/nope").status_code == 404


def test_a_revoked_token_is_refused_at_once_in_the_worker_that_revoked_it(kernel, bearer):
    token, client = bearer
    assert client.get("/api/kernels/k1").status_code == 200  # verified, now cached
    services.token_revoke(token=token, actor=services.Actor(name="olga", source="admin", user=token.user))
    response = client.get("/api/kernels/k1")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_a_token_revoked_elsewhere_is_refused_within_the_bound(kernel, bearer):
    token, client = bearer
    assert client.get("/api/kernels/k1").status_code == 200
    # Another worker's revocation: the row changes, no signal reaches this process.
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    wait_until(lambda: client.get("/api/kernels/k1").status_code == 401, timeout=TOKEN_CACHE_S + 60,
               poll=0.2, what="the revoked token refused")
    assert client.get("/api/kernels/k1").status_code == 401


def test_a_deactivated_user_is_refused(kernel, bearer):
    token, client = bearer
    assert client.get("/api/kernels/k1").status_code == 200
    user = token.user
    user.is_active = False
    user.save()
    assert client.get("/api/kernels/k1").status_code == 401
