"""trading.selectors: the kernel dashboard's figures, the strategies a kernel knows, a command
by its key, a page of the audit log."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.trading.service_calls import CLI
from trading import selectors, services
from trading.models import ControlCommand, EquitySample, Fill, Slot

pytestmark = pytest.mark.django_db


def test_kernel_dashboard_shows_the_kernels_round_trips_not_a_sum_of_fills(idle_kernel):
    # The kernel's figures (status.json, kernel.round_trips) are the dashboard's: fills mirrored with
    # their own P&L (which leaves out the entry fee) are not summed again.
    now = timezone.now()
    Slot.objects.filter(slot_id="btc-5m").update(unrealized_pnl=5.0)
    for i, (side, pnl) in enumerate([("buy", None), ("sell", 10.0), ("buy", None), ("sell", -4.0), ("sell", 2.0)]):
        Fill.objects.create(kernel=idle_kernel, fill_id=f"f{i}", client_order_id=f"o{i}", slot_id="btc-5m",
                            side=side, qty=1, price=100, fee=0.1, pnl=pnl, at=now - timedelta(minutes=5 - i))
    idle_kernel.status = {
        "slots": [{"id": "btc-5m", "position": {"qty": 0.0, "realized_pnl": 7.6, "trades": 3, "wins": 2}}],
        "ledger": {"realized_pnl": 7.6, "trades": 3, "wins": 2},
    }
    idle_kernel.save(update_fields=["status"])
    EquitySample.objects.create(kernel=idle_kernel, at=now, equity=100_010.0)

    board = selectors.kernel_dashboard(kernel=idle_kernel, window=timedelta(hours=24))

    assert (board["total"]["trades"], board["total"]["wins"]) == (3, 2)
    assert board["total"]["win_rate"] == pytest.approx(2 / 3)
    assert board["total"]["realized_pnl"] == pytest.approx(7.6)
    assert board["total"]["unrealized_pnl"] == pytest.approx(5.0)
    assert board["slots"][0]["slot_id"] == "btc-5m" and board["slots"][0]["trades"] == 3
    assert board["slots"][0]["realized_pnl"] == pytest.approx(7.6)
    assert [e["equity"] for e in board["equity"]] == [100_010.0]


def test_kernel_dashboard_of_a_kernel_that_never_reported_shows_no_trades(idle_kernel):
    board = selectors.kernel_dashboard(kernel=idle_kernel, window=timedelta(hours=24))
    assert (board["total"]["trades"], board["total"]["win_rate"], board["total"]["realized_pnl"]) == (0, None, 0.0)


def test_kernel_strategies_are_those_loaded_and_those_configured(idle_kernel):
    assert selectors.kernel_strategies(kernel=idle_kernel) == ["ema_cross"]  # no status yet: configured only
    idle_kernel.status = {"strategies": {"rsi_revert": {"version": 2}, "ema_cross": {"version": 1}}}
    idle_kernel.save(update_fields=["status"])
    Slot.objects.create(kernel=idle_kernel, slot_id="eth-5m", symbol="ETH/USDT", timeframe="5m", strategy="breakout")
    assert selectors.kernel_strategies(kernel=idle_kernel) == ["breakout", "ema_cross", "rsi_revert"]


def test_command_find_is_none_for_a_row_that_is_gone(idle_kernel):
    command = services.command_issue(kernel=idle_kernel, action="pause", actor=CLI)
    found = selectors.command_find(pk=command.pk)
    assert found == command and found.kernel == idle_kernel
    assert selectors.command_find(pk=command.pk + 1000) is None
    assert ControlCommand.objects.count() == 1


def test_audit_page_is_a_slice_of_the_filtered_log_with_its_count():
    for i in range(5):
        services.audit_record(action=f"test.{'even' if i % 2 == 0 else 'odd'}", actor=CLI, kernel_name="k1",
                              payload={"i": i})
    services.audit_record(action="test.even", actor=CLI, kernel_name="k2", payload={"i": 5})

    page = selectors.audit_page(offset=1, limit=2, action="test.*", kernel="k1")

    assert (page["count"], page["offset"], page["limit"]) == (5, 1, 2)
    assert [e.payload["i"] for e in page["items"]] == [3, 2]  # newest first
    page = selectors.audit_page(offset=0, limit=50, action="test.even")
    assert page["count"] == 4 and [e.payload["i"] for e in page["items"]] == [5, 4, 2, 0]
