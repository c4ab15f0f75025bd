"""The trading API (issue 14, item 8): fills, positions, the equity series and slot.add, with
bad input (422), permissions by role (403), unknown kernels (404) and paging."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tests.support.status_reader import read_control
from trading.models import EquitySample, Fill, Kernel, Slot

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=dt_timezone.utc)


@pytest.fixture
def kernel(tmp_path, settings) -> Kernel:
    settings.FORESIGHT_AUDIT_SPOOL = str(tmp_path / "audit-spool.jsonl")
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    kernel = Kernel.objects.create(name="k1", state_dir=str(state_dir), state="running")
    Slot.objects.create(kernel=kernel, slot_id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="ema_cross",
                        strategy_version=3, position_qty=0.5, entry_price=40_000.0, last_price=41_000.0,
                        realized_pnl=12.5, unrealized_pnl=500.0, state="active")
    Slot.objects.create(kernel=kernel, slot_id="eth-5m", symbol="ETH/USDT", timeframe="5m", strategy="breakout")
    other = Kernel.objects.create(name="k2", state_dir=str(tmp_path / "k2"))
    for i in range(5):
        Fill.objects.create(kernel=kernel, fill_id=f"f{i}", client_order_id=f"o{i}", slot_id="btc-5m" if i % 2 else "eth-5m",
                            side="buy", qty=1.0 + i, price=100.0 + i, fee=0.1, at=T0 + timedelta(minutes=i))
    Fill.objects.create(kernel=other, fill_id="f0", client_order_id="x", slot_id="btc-5m", side="buy", qty=9, price=9,
                        fee=0, at=T0)
    for i in range(6):
        EquitySample.objects.create(kernel=kernel, at=T0 + timedelta(seconds=10 * i), equity=10_000.0 + i, cash=9_000.0)
    return kernel


def _client(role: str | None) -> Client:
    user = User.objects.create_user(f"u-{role}", password="a-long-password-1")
    if role:
        user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def test_fills_newest_first_by_slot_since_and_paged(kernel):
    api = _client("Viewer")
    body = api.get("/api/kernels/k1/fills").json()
    assert body["count"] == 5 and [f["fill_id"] for f in body["items"]] == ["f4", "f3", "f2", "f1", "f0"]
    assert body["items"][0] == {"fill_id": "f4", "client_order_id": "o4", "slot_id": "eth-5m", "side": "buy",
                                "qty": 5.0, "price": 104.0, "fee": 0.1, "pnl": None, "at": "2026-03-01T12:04:00Z"}
    assert [f["fill_id"] for f in api.get("/api/kernels/k1/fills?slot=btc-5m").json()["items"]] == ["f3", "f1"]
    since = api.get("/api/kernels/k1/fills", {"since": "2026-03-01T12:02:00Z"}).json()
    assert [f["fill_id"] for f in since["items"]] == ["f4", "f3", "f2"]
    # An offset is a time zone like any other: 13:02+01:00 is 12:02 UTC.
    assert api.get("/api/kernels/k1/fills", {"since": "2026-03-01T13:02:00+01:00"}).json()["count"] == 3
    page = api.get("/api/kernels/k1/fills?limit=2&offset=2").json()
    assert (page["count"], [f["fill_id"] for f in page["items"]]) == (5, ["f2", "f1"])
    assert api.get("/api/kernels/k1/fills?limit=0").status_code == 422
    assert api.get("/api/kernels/k1/fills?slot=BAD SLOT").status_code == 422
    assert api.get("/api/kernels/k1/fills?since=yesterday").status_code == 422
    assert api.get("/api/kernels/nope/fills").status_code == 404


def test_positions_per_slot(kernel):
    body = _client("Viewer").get("/api/kernels/k1/positions").json()
    assert [p["slot_id"] for p in body] == ["btc-5m", "eth-5m"]
    btc = body[0]
    assert (btc["position_qty"], btc["entry_price"], btc["realized_pnl"], btc["unrealized_pnl"]) == (
        0.5, 40_000.0, 12.5, 500.0)
    assert (btc["strategy"], btc["strategy_version"], btc["symbol"]) == ("ema_cross", 3, "BTC/USDT")
    assert body[1]["position_qty"] == 0.0 and body[1]["entry_price"] is None


def test_equity_series_between_since_and_until_the_newest_when_truncated(kernel):
    api = _client("Viewer")
    body = api.get("/api/kernels/k1/equity").json()
    assert (body["count"], body["truncated"]) == (6, False)
    assert [p["equity"] for p in body["items"]] == [10_000.0 + i for i in range(6)]
    window = api.get("/api/kernels/k1/equity", {"since": "2026-03-01T12:00:10Z", "until": "2026-03-01T12:00:30Z"})
    assert [p["equity"] for p in window.json()["items"]] == [10_001.0, 10_002.0, 10_003.0]
    newest = api.get("/api/kernels/k1/equity?limit=2").json()
    assert (newest["count"], newest["truncated"], [p["equity"] for p in newest["items"]]) == (6, True, [10_004.0, 10_005.0])
    assert api.get("/api/kernels/k1/equity?limit=100000").status_code == 422


def test_reads_need_a_login_and_the_view_permission(kernel):
    assert Client().get("/api/kernels/k1/fills").status_code == 401
    nobody = _client(None)
    for path in ("/api/kernels/k1/fills", "/api/kernels/k1/positions", "/api/kernels/k1/equity"):
        response = nobody.get(path)
        assert response.status_code == 403, path
        assert "permission" in response.json()["detail"]


NEW_SLOT = {"id": "sol-15m", "symbol": "SOL/USDT", "timeframe": "15m", "strategy": "breakout",
            "params": {"window": 20}, "order_notional": 50.0}


def test_slot_add_needs_the_risk_role_and_writes_the_command(kernel, django_capture_on_commit_callbacks):
    for role in ("Viewer", "Operator"):
        response = _client(role).post("/api/kernels/k1/slots", NEW_SLOT, content_type="application/json")
        assert response.status_code == 403, (role, response.content)
        assert "configure_slot" in response.json()["detail"]
    assert not (Path(kernel.state_dir) / "control.json").exists()
    risk = _client("Risk")
    with django_capture_on_commit_callbacks(execute=True):
        response = risk.post("/api/kernels/k1/slots", NEW_SLOT, content_type="application/json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["action"], body["slot_id"], body["kernel"]) == ("slot.add", "sol-15m", "k1")
    (written,) = read_control(kernel.state_dir)["commands"]
    assert (written["id"], written["action"], written["slot"], written["issued_by"]) == (
        body["command_id"], "slot.add", "sol-15m", "u-Risk")
    assert written["args"] == {"symbol": "SOL/USDT", "timeframe": "15m", "strategy": "breakout",
                               "params": {"window": 20}, "order_notional": 50.0}
    # A slot that exists is a conflict, not a second command.
    response = risk.post("/api/kernels/k1/slots", {**NEW_SLOT, "id": "btc-5m"}, content_type="application/json")
    assert response.status_code == 409 and "already exists" in response.json()["detail"]


@pytest.mark.parametrize("change, field", [
    ({"timeframe": "7m"}, "timeframe"),
    ({"symbol": "solusdt"}, "symbol"),
    ({"strategy": "../evil"}, "strategy"),
    ({"id": "Has Spaces"}, "id"),
    ({"params": "fast=3"}, "params"),
    ({"order_notional": -5}, "order_notional"),
    ({"leverage": 100}, "leverage"),
])
def test_slot_add_refuses_bad_input_with_422_naming_the_field(kernel, change, field):
    response = _client("Risk").post("/api/kernels/k1/slots", {**NEW_SLOT, **change}, content_type="application/json")
    assert response.status_code == 422, response.content
    assert field in response.json()["detail"]
    assert not (Path(kernel.state_dir) / "control.json").exists()
