"""Slot configuration: the merged config checked (SlotConfig and the strategy's Params),
saved, audited before/after, and sent to the kernel as slot.configure."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction
from pydantic import ValidationError

from kernel.errors import ReloadFailed
from kernel.protocol import SlotConfig
from kernel.versions import StrategyLoader

from ..models import ControlCommand, Slot
from .actors import Actor
from .audit import audit_record
from .commands import command_issue
from .errors import ServiceError, invalid_config_error
from .permissions import permission_check


def _strategies_dir() -> Path:
    configured = getattr(settings, "FORESIGHT_STRATEGIES_DIR", None)
    return Path(configured) if configured else Path(settings.BASE_DIR) / "strategies"


def _check_strategy_params(strategy: str, params: dict) -> None:
    loader = StrategyLoader(_strategies_dir())
    try:
        version = loader.load(strategy, 0)
    except ReloadFailed as exc:
        raise ServiceError(f"strategy {strategy!r} cannot be loaded: {exc}",
                           errors={"strategy": str(exc)}) from None
    try:
        version.params(params)
    except ValidationError as exc:
        raise invalid_config_error(exc, prefix="params.") from None
    finally:
        version.unload()


@transaction.atomic
def slot_configure(*, slot: Slot, changes: dict, actor: Actor) -> ControlCommand:
    """Change a slot's configuration: validate the merged config (SlotConfig and the strategy's
    Params), save it, audit before/after, and send slot.configure with the whole new config."""
    permission_check(actor, "slot.configure")
    changes = dict(changes or {})
    if "id" in changes:
        if changes.pop("id") != slot.slot_id:
            raise ServiceError("a slot's id cannot be changed", errors={"id": "cannot be changed"})
    unknown = sorted(set(changes) - set(Slot.CONFIG_FIELDS))
    if unknown:
        raise ServiceError(f"unknown slot fields: {', '.join(unknown)}",
                           errors={f: "unknown field" for f in unknown})
    before = slot.config()
    merged = {**before, **changes}
    try:
        config = SlotConfig.model_validate(merged)
    except ValidationError as exc:
        raise invalid_config_error(exc) from None
    _check_strategy_params(config.strategy, config.params)
    after = config.model_dump(mode="json")
    for field in Slot.CONFIG_FIELDS:
        setattr(slot, field, after[field])
    slot.save(update_fields=list(Slot.CONFIG_FIELDS))
    changed = sorted(f for f in Slot.CONFIG_FIELDS if before.get(f) != after.get(f))
    audit_record(
        action="config.changed", actor=actor, kernel=slot.kernel, slot_id=slot.slot_id, outcome="saved",
        payload={"before": before, "after": after, "changed": changed},
    )
    args = {k: v for k, v in after.items() if k != "id"}
    return command_issue(kernel=slot.kernel, action="slot.configure", actor=actor, slot_id=slot.slot_id, args=args)
