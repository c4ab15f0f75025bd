"""What the admin tests share: a kernel that is a state dir whose status.json the test writes
(real files, read by the real status sync), users per role, and readers of what a page said.

No kernel runs in tests/trading: commands therefore stay "sent, not confirmed yet"; what the
kernel answers is covered by tests/integration/test_admin_kernel.py and test_browser.py.
Test modules import the fixtures by name (``from tests.trading.admin_fixtures import ...``).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone as dt_timezone
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from kernel.control import write_status
from kernel.protocol import CommandStatus, HaltStatus, PositionStatus, SlotConfig, SlotStatus, Status
from trading import services
from trading.models import Kernel, Slot


@pytest.fixture(autouse=True)
def no_kernel_to_wait_for(settings):
    # Nothing answers in these tests: a button reports "sent, not confirmed yet" at once.
    settings.FORESIGHT_ADMIN_COMMAND_WAIT_S = 0.0


def iso(dt: datetime) -> str:
    return dt.astimezone(dt_timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def slot_status(slot_id: str, symbol: str, strategy: str = "ema_cross", **config) -> SlotStatus:
    cfg = SlotConfig(id=slot_id, symbol=symbol, timeframe="5m", strategy=strategy, order_notional=500.0,
                     max_notional=2000.0, **config)
    return SlotStatus(id=slot_id, symbol=symbol, timeframe="5m", strategy=strategy, strategy_version=1,
                      strategy_sha256="24fb674884c290f8" + "0" * 48, state="active",
                      position=PositionStatus(qty=0.25, entry_price=64000.0, realized_pnl=12.5),
                      cycles=7, missed_cycles=1, last_price=64100.0, unrealized_pnl=25.0, config=cfg)


def write_kernel_status(state_dir: Path, *, heartbeat: datetime | None = None, state: str = "running",
                        halt_reason: str | None = None, commands: list[CommandStatus] = (),
                        tick: int = 10, strategies: dict | None = None, slots: list[SlotStatus] | None = None
                        ) -> Status:
    """A status.json as a kernel writes it (same model, same atomic writer). ``strategies`` and
    ``slots`` replace the default ones (one ema_cross v1 on btc-5m and eth-5m)."""
    now = timezone.now()
    status = Status(
        state="halted" if halt_reason else state,
        heartbeat_at=iso(heartbeat or now),
        clock_at=iso(now),
        pid=4242,
        tick=tick,
        halt=HaltStatus(engaged=bool(halt_reason), since=iso(now - timedelta(minutes=3)) if halt_reason else None,
                        reason=halt_reason),
        strategies=strategies if strategies is not None else {
            "ema_cross": {"version": 1, "sha256": "24fb674884c290f8" + "0" * 48,
                          "loaded_at": iso(now - timedelta(hours=1)), "previous": None}},
        slots=slots if slots is not None else [slot_status("btc-5m", "BTC/USDT"), slot_status("eth-5m", "ETH/USDT")],
        commands=list(commands),
        ledger={"orders": 4, "open_orders": 0, "fills": 4, "realized_pnl": 12.5, "fees": 1.0,
                "cash": 99000.0, "equity": 100025.0, "unrealized_pnl": 25.0},
    )
    write_status(state_dir / "status.json", status)
    return status


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def kernel(state_dir: Path) -> Kernel:
    write_kernel_status(state_dir)
    return services.kernel_register(name="k1", state_dir=str(state_dir))


@pytest.fixture
def slot(kernel: Kernel) -> Slot:
    return Slot.objects.get(kernel=kernel, slot_id="btc-5m")


@pytest.fixture
def login(client, django_user_model):
    """``login("Operator")``: a staff user in that group (None: no group), logged into ``client``."""
    services.roles_setup()

    def as_role(role: str | None):
        user, created = django_user_model.objects.get_or_create(username=(role or "nobody").lower(),
                                                                defaults={"is_staff": True})
        if created and role:
            user.groups.add(Group.objects.get(name=role))
        client.force_login(user)
        return client

    return as_role


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def kernel_url(name: str, kernel: Kernel, *args) -> str:
    return reverse(f"admin:trading_kernel_{name}", args=[kernel.pk, *args])


def slot_url(slot: Slot, action: str) -> str:
    return reverse("admin:trading_slot_control", args=[slot.pk, action])


def slot_form(slot: Slot, **changes) -> dict:
    data = {f: getattr(slot, f) for f in Slot.CONFIG_FIELDS}
    data["params"] = json.dumps(data["params"])
    data["max_position"] = "" if data["max_position"] is None else data["max_position"]
    data.update(changes)
    if not data["enabled"]:
        data.pop("enabled")
    return data
