"""One definition of a round trip (kernel.round_trips): the figures a kernel's ledger books for a
scripted sequence of fills with fees are the ones status.json, kernelctl, the API and the
console's dashboard show, per slot and in total. The reference is worked out by hand in
tests/kernel/test_round_trips.py (SCRIPT: round trips -0.20 and +9.79, entry and exit fees in)."""
from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client

from tests.kernel.kernel_driver import STRATEGIES, Driver
from tests.kernel.test_round_trips import ROUND_TRIPS, SCRIPT, SELL_PNLS, _book
from tests.support.strategy_folders import write_strategies
from trading import selectors, services
from trading.models import Kernel

pytestmark = pytest.mark.django_db


@pytest.fixture
def spool(tmp_path, settings):
    settings.FORESIGHT_AUDIT_SPOOL = str(tmp_path / "audit-spool.jsonl")


def test_ledger_status_kernelctl_api_and_dashboard_show_the_same_round_trips(tmp_path, spool):
    folder = tmp_path / "strategies"
    folder.mkdir()
    driver = Driver(tmp_path / "state", write_strategies(folder, STRATEGIES))
    try:
        driver.add_slot("btc-5m", "tagged")
        driver.add_slot("eth-5m", "tagged", symbol="ETH/USDT")
        _book(driver.kernel.ledger, "btc-5m", SCRIPT)
        _book(driver.kernel.ledger, "eth-5m", SCRIPT[:1])  # an open round trip: its entry fee only
        driver.kernel.status.writer.write_now(driver.kernel.snapshot())
        pos = driver.kernel.ledger.position("btc-5m")
        assert (pos.trades, pos.wins) == (2, 1) and pos.realized_pnl == pytest.approx(sum(ROUND_TRIPS))

        out = StringIO()
        call_command("kernelctl", "ledger", "--state-dir", str(driver.state_dir), "--json", stdout=out)
        ledger = json.loads(out.getvalue())
        assert (ledger["summary"]["trades"], ledger["summary"]["wins"]) == (2, 1)
        assert ledger["positions"]["btc-5m"]["realized_pnl"] == pytest.approx(sum(ROUND_TRIPS))
        human = StringIO()
        call_command("kernelctl", "ledger", "--state-dir", str(driver.state_dir), stdout=human)
        assert "trades 2 wins 1" in human.getvalue()
    finally:
        driver.close()

    total = sum(ROUND_TRIPS) - 0.1  # and eth-5m's open entry fee
    status_file = driver.state_dir / "status.json"
    last = json.loads(status_file.read_text())  # the kernel's last word, at its stop
    last["speed"] = None  # as a replay at --speed inf reports it: the status sync accepts it
    status_file.write_text(json.dumps(last))
    out = StringIO()
    call_command("kernelctl", "status", "--state-dir", str(driver.state_dir), stdout=out)
    lines = out.getvalue().splitlines()
    assert any("btc-5m" in line and "realized 9.59 trades 2 wins 1" in line for line in lines), lines
    assert any("eth-5m" in line and "realized -0.10 trades 0 wins 0" in line for line in lines), lines
    assert "total realized 9.49 trades 2 wins 1" in out.getvalue()
    kernel = Kernel.objects.create(name="k1", state_dir=str(driver.state_dir), state="running")
    assert services.status_sync(kernel=kernel)["status"] == "ok"
    kernel.refresh_from_db()
    assert kernel.status["speed"] is None

    board = selectors.kernel_dashboard(kernel=kernel, window=timedelta(hours=24))
    btc = next(s for s in board["slots"] if s["slot_id"] == "btc-5m")
    eth = next(s for s in board["slots"] if s["slot_id"] == "eth-5m")
    assert (btc["trades"], btc["wins"], btc["win_rate"]) == (2, 1, 0.5)
    assert btc["realized_pnl"] == pytest.approx(sum(ROUND_TRIPS))
    assert (eth["trades"], eth["realized_pnl"]) == (0, pytest.approx(-0.1))
    assert (board["total"]["trades"], board["total"]["wins"]) == (2, 1)
    assert board["total"]["realized_pnl"] == pytest.approx(total)
    # Not the sum of the sells' own P&L, which leaves out every entry fee.
    assert board["total"]["realized_pnl"] != pytest.approx(sum(SELL_PNLS))

    user = User.objects.create_user("olga", password="a-long-password-1")
    user.groups.add(Group.objects.get(name="Operator"))
    client = Client()
    client.force_login(user)
    body = client.get("/api/kernels/k1").json()
    slots = {s["id"]: s for s in body["status"]["slots"]}
    assert (slots["btc-5m"]["position"]["trades"], slots["btc-5m"]["position"]["wins"]) == (2, 1)
    assert slots["btc-5m"]["position"]["realized_pnl"] == pytest.approx(sum(ROUND_TRIPS))
    assert (body["status"]["ledger"]["trades"], body["status"]["ledger"]["wins"]) == (2, 1)
    assert body["status"]["ledger"]["realized_pnl"] == pytest.approx(total)
    listed = {s["slot_id"]: s for s in client.get("/api/kernels/k1/slots").json()}
    assert listed["btc-5m"]["realized_pnl"] == pytest.approx(sum(ROUND_TRIPS))
