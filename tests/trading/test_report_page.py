"""The report in the console (issue 12, item 9): the kernel's report page and
GET /api/kernels/{name}/report, built from the mirrored fills and equity samples. Reference
figures worked out by hand from the fills and samples below."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from tests.trading.admin_fixtures import kernel, kernel_url, login, state_dir  # noqa: F401 (fixtures)
from tests.trading.test_csp import PASSWORD, page  # noqa: F401 (the browser with its policy listener)
from trading import services
from trading.models import EquitySample, Fill, Kernel

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, tzinfo=dt_timezone.utc)
H = timedelta(hours=1)
# btc-5m: buy 1 @ 100 (fee 0.1), sell 1 @ 110 (fee 0.11): +10 - 0.21 = +9.79
# eth-5m: buy 2 @ 50 (fee 0.1), sell 2 @ 45 (fee 0.09): -10 - 0.19 = -10.19
# btc-5m: buy 0.5 @ 120 (fee 0.06): open
FILLS = [("btc-5m", "buy", 1.0, 100.0, 0.1, 1), ("btc-5m", "sell", 1.0, 110.0, 0.11, 5),
         ("eth-5m", "buy", 2.0, 50.0, 0.1, 26), ("eth-5m", "sell", 2.0, 45.0, 0.09, 30),
         ("btc-5m", "buy", 0.5, 120.0, 0.06, 50)]
# Sampled equity: peak 10009.79 at 5 h, trough 9999.54 at 50 h: max drawdown 10.25.
SAMPLES = [(0, 10_000.0), (5, 10_009.79), (30, 9_999.60), (50, 9_999.54), (60, 10_003.0)]


@pytest.fixture
def mirrored(kernel: Kernel) -> Kernel:  # noqa: F811 (the fixture above)
    EquitySample.objects.filter(kernel=kernel).delete()  # the registration's sync sampled its status.json
    for i, (slot, side, qty, price, fee, hours) in enumerate(FILLS):
        Fill.objects.create(kernel=kernel, fill_id=f"F{i}", client_order_id=f"c{i}", slot_id=slot, side=side,
                            qty=qty, price=price, fee=fee, at=T0 + hours * H)
    for hours, equity in SAMPLES:
        EquitySample.objects.create(kernel=kernel, at=T0 + hours * H, equity=equity)
    return kernel


def test_the_report_page_shows_the_figures_the_trades_and_an_svg_curve(login, mirrored):  # noqa: F811
    response = login("Viewer").get(kernel_url("report", mirrored))
    assert response.status_code == 200
    page = response.content.decode()
    summary = dict(re.findall(r'<tr><th scope="row">([^<]+)</th><td>([^<]*)</td></tr>', page))
    assert summary["Starting equity"] == "10,000.00" and summary["Final equity"] == "10,003.00"
    assert summary["Total return"] == "0.03%"
    assert summary["Trades (closed) / open"] == "2 / 1"
    assert summary["Win / draw / loss"] == "1 / 0 / 1" and summary["Win rate"] == "50.00%"
    assert summary["Realised P&amp;L (fees included)"] == f"{9.79 - 10.19 - 0.06:,.2f}"
    assert summary["Fees paid"] == "0.46"
    assert summary["Max drawdown"] == f"10.25 ({10.25 / 10_009.79 * 100:.2f}%)"
    # In market 1-5 h, 26-30 h and 50-60 h (open to the end) of 60 h.
    assert summary["Exposure (time in market)"] == f"{18 / 60 * 100:.2f}%"
    assert '<svg class="equity-chart"' in page and "<polyline" in page
    trades = re.search(r'<table id="report-trades">(.*?)</table>', page, re.S).group(1)
    assert trades.count("<tr class=") == 3
    assert "9.7900" in trades and "-10.1900" in trades and ">open<" in trades
    slots = re.search(r'<table id="report-slots">(.*?)</table>', page, re.S).group(1)
    assert "btc-5m" in slots and "eth-5m" in slots and "BTC/USDT" in slots


def test_the_report_page_narrowed_to_a_slot_and_empty(login, mirrored):  # noqa: F811
    client = login("Viewer")
    page = client.get(kernel_url("report", mirrored) + "?slot=eth-5m").content.decode()
    assert "-10.1900" in page and "9.7900" not in page
    empty = Kernel.objects.create(name="k2", state_dir=str(mirrored.state_dir), state="running")
    page = client.get(kernel_url("report", empty)).content.decode()
    assert 'id="report-empty"' in page and "Not enough equity samples" in page


def test_the_kernels_list_links_the_report(login, mirrored):  # noqa: F811
    page = login("Viewer").get("/admin/trading/kernel/").content.decode()
    assert f'href="{kernel_url("report", mirrored)}"' in page


def test_the_report_api(login, mirrored):  # noqa: F811
    body = login("Viewer").get("/api/kernels/k1/report").json()
    assert (body["kernel"], body["trades"], body["open_trades"], body["wins"]) == ("k1", 2, 1, 1)
    assert body["realized_pnl"] == pytest.approx(9.79 - 10.19 - 0.06)
    assert body["starting_equity"] == 10_000.0 and body["final_equity"] == 10_003.0
    assert body["max_drawdown"] == pytest.approx(10.25)
    assert body["max_drawdown_pct"] == pytest.approx(10.25 / 10_009.79)
    assert (body["drawdown_start_at"], body["drawdown_end_at"]) == ("2026-03-01T05:00:00Z", "2026-03-03T02:00:00Z")
    assert [t["pnl"] for t in body["trade_list"]] == [pytest.approx(9.79), pytest.approx(-10.19), None]
    assert body["trade_list"][1]["symbol"] == "ETH/USDT" and body["trade_list"][2]["is_open"] is True
    assert [v for _, v in body["equity"]] == [v for _, v in SAMPLES]
    one = login("Viewer").get("/api/kernels/k1/report?slot=btc-5m").json()
    assert (one["trades"], one["closed_pnl"]) == (1, pytest.approx(9.79))
    late = login("Viewer").get("/api/kernels/k1/report?since=2026-03-02T00:00:00").json()
    assert [t["pnl"] for t in late["trade_list"]] == [pytest.approx(-10.19), None]  # closed on day 2; open
    assert late["starting_equity"] == 10_009.79  # the last sample before the window
    assert Client().get("/api/kernels/k1/report").status_code == 401
    assert login("Viewer").get("/api/kernels/nope/report").status_code == 404


@pytest.mark.integration
@pytest.mark.usefixtures("audit_log_flushable")
def test_the_report_page_trips_no_content_security_policy_in_a_browser(live_server, page, mirrored,
                                                                      django_user_model):
    services.roles_setup()
    user = django_user_model.objects.create_user("vic", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Viewer"))
    page.goto(live_server.url + reverse("admin:login"))
    page.fill("#id_username", "vic")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    page.goto(live_server.url + kernel_url("report", mirrored))
    assert page.locator("#report-equity svg polyline").count() == 1
    assert page.locator("#report-trades tbody tr").count() == 3
    assert page.evaluate("window.__violations") == []
