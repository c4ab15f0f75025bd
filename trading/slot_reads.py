"""What a slot page shows (issue 14): the slot's effective state (a slot of a halted or
silent kernel is not "active"), the params that actually run (the strategy's declared
defaults merged with the slot's own), its fills, position, P&L and P&L curve. Reads only."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from kernel import release_store
from kernel.errors import ReloadFailed
from kernel.versions import StrategyLoader

from .console_health import kernel_health, kernel_stale
from .models import Fill, Kernel, Slot

RECENT_FILLS = 20
CURVE_FILLS = 500


def kernel_condition(kernel: Kernel, now: datetime | None = None) -> str:
    """The kernel's condition as the health strip names it (console_health.kernel_health),
    without its queries: halted, not reporting, stopped, or the state it reports."""
    if kernel.halt_engaged or kernel.state == "halted":
        return "halted"
    if kernel_stale(kernel, now):
        return "not reporting"
    return kernel.state or "unknown"


def effective_state(*, slot_state: str, fault: str, kernel_condition: str) -> str:
    """What the slot really does now. The kernel's condition wins over the slot's own state:
    a halted kernel runs no slot, a silent one may run nothing, a stopped one schedules none."""
    if kernel_condition in ("halted", "not reporting", "stopped"):
        return f"{kernel_condition} (kernel)"
    if fault:
        return "faulted"
    if kernel_condition == "paused" and slot_state == "active":
        return "paused (kernel)"
    return slot_state or "unknown"


def slot_effective_state(slot: Slot, now: datetime | None = None) -> str:
    return effective_state(slot_state=slot.state, fault=slot.fault,
                           kernel_condition=kernel_condition(slot.kernel, now))


def _strategies_dir() -> Path:
    configured = getattr(settings, "FORESIGHT_STRATEGIES_DIR", None)
    return Path(configured) if configured else Path(settings.BASE_DIR) / "strategies"


def _declared_defaults(kernel: Kernel, strategy: str, sha256: str) -> tuple[dict[str, Any], str]:
    """(field -> default of the strategy's ``Params``, where they were read). The version the
    kernel runs, from its release store, when this host can read it; else the strategies folder."""
    loader = StrategyLoader(_strategies_dir())
    sources = []
    if sha256:
        entry = Path(kernel.state_dir) / release_store.VERSIONS_DIR / sha256
        if entry.is_dir():
            sources.append((entry, f"the running version ({sha256[:8]})"))
    sources.append((None, "the strategies folder (the running version is not readable here)"
                    if sha256 else "the strategies folder"))
    last_error = ""
    for folder, where in sources:
        try:
            version = loader.load(strategy, 0, folder=folder)
        except (ReloadFailed, OSError) as exc:
            last_error = str(exc)
            continue
        try:
            defaults = {name: field.get_default(call_default_factory=True)
                        for name, field in version.params_model.model_fields.items() if not field.is_required()}
            return defaults, where
        finally:
            version.unload()
    raise LookupError(f"strategy {strategy!r} cannot be loaded: {last_error}")


def effective_params(slot: Slot) -> dict[str, Any]:
    """The params the slot's strategy runs with: each as {name, value, default (bool)}."""
    running = slot.running_config or slot.config()
    strategy = running.get("strategy") or slot.strategy
    given = dict(running.get("params") or {})
    try:
        defaults, source = _declared_defaults(slot.kernel, strategy, slot.strategy_sha256)
    except LookupError as exc:
        return {"rows": [{"name": k, "value": v, "default": False} for k, v in sorted(given.items())],
                "source": "", "error": str(exc)}
    merged = {**defaults, **given}
    rows = [{"name": k, "value": merged[k], "default": k not in given} for k in sorted(merged)]
    return {"rows": rows, "source": source, "error": ""}


def _reported(slot: Slot) -> dict[str, Any]:
    for entry in (slot.kernel.status or {}).get("slots") or ():
        if isinstance(entry, dict) and entry.get("id") == slot.slot_id:
            return entry
    return {}


def slot_page(*, slot: Slot) -> dict[str, Any]:
    """Everything the slot page shows besides its form: the kernel's health (with the halt's
    since, by and why), the slot's effective state, its figures, fills and P&L curve."""
    now = timezone.now()
    kernel = slot.kernel
    health = kernel_health(kernel, faulted=int(bool(slot.fault)), now=now)
    position = _reported(slot).get("position") or {}
    fills = Fill.objects.filter(kernel=kernel, slot_id=slot.slot_id)
    curve, total = [], 0.0
    for at, pnl in fills.exclude(pnl=None).order_by("-at", "-id").values_list("at", "pnl")[:CURVE_FILLS][::-1]:
        total += pnl
        curve.append((at, total))
    trades = int(position.get("trades") or 0)
    wins = int(position.get("wins") or 0)
    return {
        "health": health,
        "effective_state": effective_state(slot_state=slot.state, fault=slot.fault,
                                           kernel_condition=health["condition"]),
        "fills": list(fills.order_by("-at", "-id")[:RECENT_FILLS]),
        "fill_count": fills.count(),
        "pnl_curve": curve,
        "trades": trades,
        "wins": wins,
        "win_rate": (wins / trades) if trades else None,
        "realized_pnl": float(position.get("realized_pnl", slot.realized_pnl) or 0.0),
        "unrealized_pnl": slot.unrealized_pnl,
        "now": now,
    }
