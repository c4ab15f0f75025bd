"""Issue 14, items 2-5 at the unit level: a slot's effective state, the params that run with
their defaults, the rounding filter, buttons that follow the kernel's state, a command to a
silent kernel confirmed first, release and rollback confirmed with a reason (admin, API,
kernelctl), the equity chart on its window's clock."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from tests.integration.console_db import audit_log_flushable  # noqa: F401 (a fixture)
from tests.trading.admin_fixtures import (  # noqa: F401 (fixtures)
    kernel, login, no_kernel_to_wait_for, slot, slot_status, state_dir, write_kernel_status,
)
from trading import services
from trading.admin.command_buttons import kernel_button_shown, slot_button_shown
from trading.models import AuditEvent, ControlCommand, Fill, Kernel, Slot
from trading.slot_reads import effective_state
from trading.templatetags.equity_chart import PAD_LEFT, PAD_RIGHT, WIDTH, equity_svg
from trading.templatetags.trading_format import num, pnl, qty, rounded

pytestmark = pytest.mark.django_db


def change_page(client, slot: Slot, fragment: bool = False) -> str:
    url = reverse("admin:trading_slot_change", args=[slot.pk]) + ("?fragment=1" if fragment else "")
    return client.get(url).content.decode()


# --------------------------------------------------------------------- the slot's effective state


@pytest.mark.parametrize("slot_state, fault, condition, expected", [
    ("active", "", "running", "active"),
    ("active", "", "halted", "halted (kernel)"),
    ("paused", "", "halted", "halted (kernel)"),
    ("active", "", "not reporting", "not reporting (kernel)"),
    ("active", "", "stopped", "stopped (kernel)"),
    ("active", "", "paused", "paused (kernel)"),
    ("paused", "", "paused", "paused"),
    ("active", "ZeroDivisionError", "running", "faulted"),
])
def test_effective_state(slot_state, fault, condition, expected):
    assert effective_state(slot_state=slot_state, fault=fault, kernel_condition=condition) == expected


def test_the_slot_page_of_a_halted_kernel_says_halted_with_the_reason(login, kernel, slot):
    write_kernel_status(Path(kernel.state_dir), halt_reason="exchange misbehaves", tick=11)
    services.status_sync(kernel=kernel)
    client = login("Viewer")
    for page in (change_page(client, slot), change_page(client, slot, fragment=True)):
        assert 'id="effective-state"' in page and "HALTED (KERNEL)" in page
        assert "exchange misbehaves" in page
        assert ">ACTIVE<" not in page
    # The changelist's state column says it too.
    listing = client.get(reverse("admin:trading_slot_changelist")).content.decode()
    assert "halted (kernel)" in listing


def test_the_slot_page_of_a_silent_kernel_says_not_reporting(login, kernel, slot):
    write_kernel_status(Path(kernel.state_dir), heartbeat=timezone.now() - timedelta(seconds=120), tick=11)
    services.status_sync(kernel=kernel)
    page = change_page(login("Viewer"), slot)
    assert "NOT REPORTING (KERNEL)" in page and "2 min ago" in page


def test_the_fragment_is_the_live_part_only(login, kernel, slot):
    page = change_page(login("Viewer"), slot, fragment=True)
    assert "<html" not in page and 'id="slot-live"' in page and 'id="fills-table"' in page


def test_the_slot_page_shows_the_params_that_run_with_their_defaults(login, kernel, slot):
    # ema_cross declares fast=12, slow=26, stop_loss_pct=None, max_bars_held=None (strategies/ema_cross.py).
    write_kernel_status(Path(kernel.state_dir), tick=11, slots=[
        slot_status("btc-5m", "BTC/USDT", params={"fast": 5}), slot_status("eth-5m", "ETH/USDT")])
    services.status_sync(kernel=kernel)
    page = change_page(login("Viewer"), slot)
    assert 'id="param-fast"><th>fast</th><td><code>5</code></td><td>this slot</td>' in page
    assert 'id="param-slow"><th>slow</th><td><code>26</code></td><td><em>default</em></td>' in page
    assert 'id="param-stop_loss_pct"><th>stop_loss_pct</th><td><code>None</code></td><td><em>default</em>' in page
    assert "the strategies folder" in page  # this host holds no release store for the running sha


def test_the_slot_page_shows_its_fills_and_the_pnl_curve(login, kernel, slot):
    at = timezone.now() - timedelta(minutes=10)
    rows = [("buy", 0.01, 64000.0, None), ("sell", 0.01, 64500.0, 4.8765), ("buy", 0.01, 64100.0, None),
            ("sell", 0.01, 63900.0, -2.125)]
    for i, (side, q, price, p) in enumerate(rows):
        Fill.objects.create(kernel=kernel, fill_id=f"f{i}", client_order_id=f"o{i}", slot_id="btc-5m", side=side,
                            qty=q, price=price, fee=0.1, pnl=p, at=at + timedelta(minutes=i))
    Fill.objects.create(kernel=kernel, fill_id="other", client_order_id="x", slot_id="eth-5m", side="buy",
                        qty=1, price=3000.0, fee=0.1, at=at)
    page = change_page(login("Viewer"), slot)
    assert "Recent fills (4 of 4)" in page
    assert 'title="4.8765">+4.88</span>' in page and 'title="-2.125">-2.12</span>' in page
    # The curve: 4.8765, then 4.8765 - 2.125 = 2.7515.
    assert '<svg class="equity-chart"' in page and 'aria-label="Equity from 4.88 to 2.75"' in page
    assert 'href="/admin/trading/auditevent/?slot=btc-5m"' in page


# --------------------------------------------------------------------- numbers


@pytest.mark.parametrize("value, digits, expected", [
    (0.009347699220472442, None, "0.009348"),  # 4 significant digits below 1
    (1.23456789, None, "1.2346"),               # 4 decimals from 1
    (64123.456789, None, "64,123.46"),          # 2 decimals from 100
    (-0.0000123456, None, "-0.00001235"),
    (0.0, None, "0.00"),
    (-0.001, 2, "0.00"),                        # never "-0.00"
    (1234.5, 0, "1,234"),                       # banker's rounding of the format: 1234.5 -> 1234
    (2.5, 8, "2.50000000"),
])
def test_rounded(value, digits, expected):
    assert rounded(value, digits) == expected


def test_num_keeps_the_full_value_on_hover():
    assert num(0.009347699220472442) == '<span class="fs-num" title="0.009347699220472442">0.009348</span>'
    assert num(None) == "—" and num("n/a") == "—" and num(float("nan")) == "—"
    assert qty(0.25) == '<span class="fs-num" title="0.25">0.2500</span>'
    assert pnl(-3.14159) == '<span class="fs-num fs-neg" title="-3.14159">-3.14</span>'
    assert pnl(12.5) == '<span class="fs-num fs-pos" title="12.5">+12.50</span>'


# --------------------------------------------------------------------- buttons follow state


@pytest.mark.parametrize("state, halted, shown", [
    ("running", False, {"stop", "pause", "reload", "rollback"}),
    ("paused", False, {"stop", "resume", "reload", "rollback"}),
    ("stopped", False, {"start", "pause", "reload", "rollback"}),
    ("halted", True, {"start", "stop", "reload", "rollback"}),
])
def test_kernel_buttons_follow_the_state(state, halted, shown):
    k = Kernel(name="k", state=state, halt_engaged=halted)
    assert {a for a in ("start", "stop", "pause", "resume", "reload", "rollback") if kernel_button_shown(a, k)} == shown


def test_slot_buttons_follow_the_state():
    assert not slot_button_shown("slot.pause", Slot(state="paused"))
    assert not slot_button_shown("slot.resume", Slot(state="active"))
    assert slot_button_shown("slot.resume", Slot(state="active", fault="boom"))
    assert slot_button_shown("slot.flatten", Slot(state="paused"))


def test_halted_kernel_shows_halted_since_by_whom_and_release(login, kernel):
    client = login("Risk")
    page = client.get(reverse("admin:trading_kernel_change", args=[kernel.pk])).content.decode()
    assert 'id="halt-button"' in page and 'id="release-button"' not in page and 'id="halted-since"' not in page
    assert ">Start scheduler<" not in page and ">Stop scheduler<" in page  # running: only Stop
    client.post(reverse("admin:trading_kernel_halt", args=[kernel.pk]), {"confirm": "yes", "reason": "drill"})
    write_kernel_status(Path(kernel.state_dir), halt_reason="drill", tick=11)
    services.status_sync(kernel=kernel)
    kernel.refresh_from_db()
    page = client.get(reverse("admin:trading_kernel_dashboard", args=[kernel.pk])).content.decode()
    since = kernel.halt_since.astimezone(dt_timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    assert f"HALTED since {since}" in page and " UTC by risk<" in page
    assert 'id="halt-button"' not in page and 'id="release-button"' in page
    assert 'href="/admin/trading/auditevent/?kernel=k1"' in page


# --------------------------------------------------------------------- a silent kernel


def test_a_command_to_a_silent_kernel_is_confirmed_first(login, kernel, slot):
    write_kernel_status(Path(kernel.state_dir), heartbeat=timezone.now() - timedelta(seconds=60), tick=11)
    services.status_sync(kernel=kernel)
    client = login("Operator")
    page = client.post(reverse("admin:trading_kernel_control", args=[kernel.pk, "pause"])).content.decode()
    assert "Kernel k1 is not reporting" in page and "applies only when the kernel returns" in page
    assert not ControlCommand.objects.exists()
    page = client.post(reverse("admin:trading_slot_control", args=[slot.pk, "slot.pause"])).content.decode()
    assert "Pause on k1/btc-5m is written to its control file and applies only when the kernel returns" in page
    assert not ControlCommand.objects.exists()
    client.post(reverse("admin:trading_kernel_control", args=[kernel.pk, "pause"]), {"confirm": "yes"})
    assert ControlCommand.objects.get().action == "pause"


def test_a_command_to_a_reporting_kernel_needs_no_confirmation(login, kernel):
    login("Operator").post(reverse("admin:trading_kernel_control", args=[kernel.pk, "pause"]))
    assert ControlCommand.objects.get().action == "pause"


# --------------------------------------------------------------------- release with a reason


@pytest.fixture
def halted(kernel):
    write_kernel_status(Path(kernel.state_dir), halt_reason="manual stop", tick=11)
    services.status_sync(kernel=kernel)
    return kernel


def test_api_release_takes_an_optional_reason(halted, django_user_model):
    from django.contrib.auth.models import Group
    from django.test import Client

    services.roles_setup()
    user = django_user_model.objects.create_user("r", is_staff=True)
    user.groups.add(Group.objects.get(name="Risk"))
    client = Client()
    client.force_login(user)
    response = client.post("/api/kernels/k1/release", {"reason": "book checked"}, content_type="application/json")
    assert response.status_code == 202
    command = ControlCommand.objects.get(action="release")
    assert AuditEvent.objects.get(action="command.issued", command_id=command.command_id).payload["args"] == {
        "reason": "book checked"}
    assert client.post("/api/kernels/k1/release", {"reason": "x" * 501},
                       content_type="application/json").status_code == 422


@pytest.mark.django_db(transaction=True)  # delivery happens once the command's transaction commits
@pytest.mark.usefixtures("audit_log_flushable")
def test_kernelctl_release_takes_a_reason(halted):
    call_command("kernelctl", "release", "--state-dir", halted.state_dir, "--reason", "from the CLI")
    command = ControlCommand.objects.get(action="release")
    assert command.args == {"reason": "from the CLI"}
    assert '"reason": "from the CLI"' in (Path(halted.state_dir) / "control.json").read_text()


# --------------------------------------------------------------------- the chart's clock


def test_the_equity_chart_runs_on_its_windows_clock():
    start = datetime(2026, 1, 1, 12, 0, tzinfo=dt_timezone.utc)
    end = start + timedelta(hours=1)
    series = [(start + timedelta(minutes=30), 100.0), (start + timedelta(minutes=45), 110.0)]
    svg = equity_svg(series, start=start, end=end)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    # Half-way and three quarters through the hour, not at the plot's two edges.
    assert f'points="{PAD_LEFT + plot_w / 2:.1f},' in svg and f" {PAD_LEFT + plot_w * 0.75:.1f}," in svg
    assert "2026-01-01 12:00:00 UTC" in svg and "2026-01-01 13:00:00 UTC" in svg


def test_a_bulk_pause_on_a_silent_kernel_is_confirmed_first(login, kernel):
    write_kernel_status(Path(kernel.state_dir), heartbeat=timezone.now() - timedelta(seconds=60), tick=11)
    services.status_sync(kernel=kernel)
    client = login("Operator")
    pks = list(Slot.objects.filter(kernel=kernel).values_list("pk", flat=True))
    changelist = reverse("admin:trading_slot_changelist")
    page = client.post(changelist, {"action": "pause_slots", "_selected_action": pks}).content.decode()
    assert "Pause on its slots is written to its control file and applies only when the kernel returns" in page
    assert not ControlCommand.objects.exists()
    client.post(changelist, {"action": "pause_slots", "_selected_action": pks, "confirm": "yes"})
    assert sorted(ControlCommand.objects.values_list("slot_id", flat=True)) == ["btc-5m", "eth-5m"]
