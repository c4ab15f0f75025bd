"""trading.services.slots: a slot's configuration validated whole (SlotConfig and the
strategy's Params), saved, audited and sent."""
from __future__ import annotations

import pytest

from tests.trading.service_calls import CLI, audit_count
from trading import services
from trading.models import AuditEvent, ControlCommand, Slot

pytestmark = pytest.mark.django_db


def test_slot_configure_validates_the_merged_config_and_the_strategy_params(idle_kernel):
    slot = Slot.objects.get(slot_id="btc-5m")
    cases = [
        ({"timeframe": "7m"}, "timeframe"),
        ({"symbol": "btc-usdt"}, "symbol"),
        ({"order_notional": 0}, "order_notional"),
        ({"params": {"fast": 30, "slow": 20}}, "params"),
        ({"params": {"fast": 1}}, "params.fast"),
        ({"params": {"colour": "red"}}, "params.colour"),
        ({"strategy": "no_such_strategy"}, "strategy"),
        ({"id": "other"}, "id"),
        ({"leverage": 100}, "leverage"),
    ]
    for changes, field in cases:
        with pytest.raises(services.ServiceError) as caught:
            services.slot_configure(slot=slot, changes=changes, actor=CLI)
        assert field in caught.value.errors, (changes, caught.value.errors)
    slot.refresh_from_db()
    assert (slot.timeframe, slot.params) == ("5m", {"fast": 12, "slow": 26})
    assert not ControlCommand.objects.exists() and not audit_count("config.changed")


def test_slot_configure_saves_audits_and_issues(idle_kernel, django_capture_on_commit_callbacks):
    slot = Slot.objects.get(slot_id="btc-5m")
    with django_capture_on_commit_callbacks(execute=True):
        command = services.slot_configure(slot=slot, changes={"strategy": "rsi_reversion", "params": {}},
                                          actor=CLI)
    slot.refresh_from_db()
    assert (slot.strategy, slot.params) == ("rsi_reversion", {})
    assert command.action == "slot.configure" and command.args["strategy"] == "rsi_reversion"
    assert set(command.args) == set(Slot.CONFIG_FIELDS)
    event = AuditEvent.objects.get(action="config.changed")
    assert event.payload["before"]["strategy"] == "ema_cross" and event.payload["after"]["strategy"] == "rsi_reversion"
    assert command.status == "delivered"
