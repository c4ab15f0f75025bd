"""Reads of the console's data, for the admin, the API and the CLI (writes are in services/)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from .models import ApiToken, AuditEvent, ControlCommand, EquitySample, Kernel, Slot
from .console_health import console_health, kernel_stale
from .release_reads import fleet_strategies, kernel_releases, strategy_versions, version_diff
from .slot_reads import effective_params, slot_effective_state, slot_page
from .services import NotFound

__all__ = [
    "kernel_list",
    "kernel_get",
    "slot_list",
    "slot_get",
    "kernel_strategies",
    "command_get",
    "command_find",
    "command_list",
    "audit_list",
    "audit_page",
    "audit_get",
    "token_list",
    "token_get",
    "kernel_dashboard",
    "strategy_versions",
    "version_diff",
    "fleet_strategies",
    "kernel_releases",
    "console_health",
    "kernel_stale",
    "slot_page",
    "slot_effective_state",
    "effective_params",
]


def kernel_list() -> QuerySet[Kernel]:
    return Kernel.objects.all()


def kernel_get(name: str) -> Kernel:
    kernel = Kernel.objects.filter(name=name).first()
    if kernel is None:
        raise NotFound(f"no kernel named {name!r}")
    return kernel


def kernel_strategies(*, kernel: Kernel) -> list[str]:
    """Strategies the kernel reports loaded, and those its slots are configured with."""
    names = set((kernel.status or {}).get("strategies", {}) or {})
    names.update(kernel.slots.values_list("strategy", flat=True))
    return sorted(names)


def slot_list(kernel: Kernel) -> QuerySet[Slot]:
    return Slot.objects.filter(kernel=kernel).select_related("kernel")


def slot_get(kernel: Kernel, slot_id: str) -> Slot:
    slot = Slot.objects.filter(kernel=kernel, slot_id=slot_id).select_related("kernel").first()
    if slot is None:
        raise NotFound(f"kernel {kernel.name} has no slot {slot_id!r}")
    return slot


def command_get(command_id: str) -> ControlCommand:
    command = ControlCommand.objects.filter(command_id=command_id).select_related("kernel").first()
    if command is None:
        raise NotFound(f"no command {command_id!r}")
    return command


def command_find(*, pk: int) -> ControlCommand | None:
    """The command with this primary key, or None (a task may outlive a row rolled back)."""
    return ControlCommand.objects.select_related("kernel").filter(pk=pk).first()


def command_list(*, kernel: Kernel | None = None, limit: int = 50) -> list[ControlCommand]:
    qs = ControlCommand.objects.select_related("kernel")
    if kernel is not None:
        qs = qs.filter(kernel=kernel)
    return list(qs.order_by("-issued_at", "-id")[:limit])


def audit_list(
    *,
    action: str | None = None,
    actor: str | None = None,
    kernel: str | None = None,
    slot: str | None = None,
    command_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """Audit events, newest first. ``action`` matches exactly, or as a prefix when it ends
    with ``*`` or ``.`` (``command.*``, ``halt.``)."""
    qs = AuditEvent.objects.all()
    if action:
        if action.endswith("*"):
            qs = qs.filter(action__startswith=action[:-1])
        elif action.endswith("."):
            qs = qs.filter(action__startswith=action)
        else:
            qs = qs.filter(action=action)
    if actor:
        qs = qs.filter(actor=actor)
    if kernel:
        qs = qs.filter(kernel_name=kernel)
    if slot:
        qs = qs.filter(slot_id=slot)
    if command_id:
        qs = qs.filter(command_id=command_id)
    if since is not None:
        qs = qs.filter(at__gte=_aware(since))
    if until is not None:
        qs = qs.filter(at__lte=_aware(until))
    return qs.order_by("-at", "-id")


def audit_page(*, offset: int, limit: int, **filters: Any) -> dict[str, Any]:
    """One page of :func:`audit_list` (its filters, by the same names): the events from
    ``offset``, at most ``limit`` of them, and how many match in all."""
    qs = audit_list(**filters)
    items = list(qs[offset:offset + limit])
    return {"count": qs.count(), "limit": limit, "offset": offset, "items": items}


def audit_get(event_id: int) -> AuditEvent:
    event = AuditEvent.objects.filter(pk=event_id).first()
    if event is None:
        raise NotFound(f"no audit event {event_id}")
    return event


def token_list(user) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user)


def token_get(*, user, token_id: int) -> ApiToken:
    """One of ``user``'s tokens (any token, for a superuser)."""
    qs = ApiToken.objects.select_related("user")
    if not user.is_superuser:
        qs = qs.filter(user=user)
    token = qs.filter(pk=token_id).first()
    if token is None:
        raise NotFound(f"you have no token {token_id}")
    return token


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=dt_timezone.utc) if timezone.is_naive(dt) else dt


def _kernel_clock(kernel: Kernel) -> datetime | None:
    raw = (kernel.status or {}).get("clock_at")
    if not raw:
        return None
    try:
        return _aware(datetime.fromisoformat(str(raw).replace("Z", "+00:00")))
    except ValueError:
        return None


def _trade_stats(figures: dict[str, Any] | None) -> dict[str, Any]:
    """Trades, wins, win rate and realised P&L as the kernel reports them (status.json: a
    slot's ``position`` or the ``ledger`` totals). One definition, the kernel's
    (kernel.round_trips): a trade is a closed round trip, its P&L counts its entry and exit
    fees; the console never re-derives them from fills."""
    figures = figures or {}
    trades = int(figures.get("trades") or 0)
    wins = int(figures.get("wins") or 0)
    return {
        "trades": trades,
        "wins": wins,
        "win_rate": (wins / trades) if trades else None,
        "realized_pnl": float(figures.get("realized_pnl") or 0.0),
    }


def kernel_dashboard(*, kernel: Kernel, window: timedelta) -> dict:
    """Per slot and in total: trades (closed round trips), wins, win rate and realized P&L as
    the kernel's ledger counts them (kernel.round_trips, through the status.json mirror: since
    the ledger began, whatever the window); unrealized P&L (from the slot mirrors); the equity
    series over ``window`` for a chart; recent commands and reloads.

    ``until`` is the kernel's clock (simulated at N× in the demo) or now, whichever is later;
    equity samples are stamped with wall time."""
    now = timezone.now()
    until = max(_kernel_clock(kernel) or now, now)
    since = until - window
    status = kernel.status or {}
    reported = {s.get("id"): s.get("position") for s in status.get("slots") or () if isinstance(s, dict)}
    slots = list(slot_list(kernel))
    per_slot = []
    for slot in slots:
        stats = _trade_stats(reported.get(slot.slot_id))
        per_slot.append({
            "slot": slot,
            "slot_id": slot.slot_id,
            "symbol": slot.symbol,
            "timeframe": slot.timeframe,
            "strategy": slot.strategy,
            "state": slot.state,
            "position_qty": slot.position_qty,
            "effective_state": slot_effective_state(slot, now),
            "unrealized_pnl": slot.unrealized_pnl or 0.0,
            **stats,
        })
    total = _trade_stats(status.get("ledger"))
    total["unrealized_pnl"] = float(sum(s["unrealized_pnl"] for s in per_slot))
    equity = [
        {"at": e.at, "equity": e.equity, "cash": e.cash, "realized_pnl": e.realized_pnl,
         "unrealized_pnl": e.unrealized_pnl}
        for e in EquitySample.objects.filter(kernel=kernel, at__gte=now - window).order_by("at")
    ]
    reloads = list(
        AuditEvent.objects.filter(kernel_name=kernel.name, action__startswith="reload.").order_by("-at", "-id")[:20]
    )
    return {
        "kernel": kernel,
        "window": window,
        "since": since,
        "until": until,
        # The equity chart's clock: its samples are stamped with wall time.
        "equity_since": now - window,
        "equity_until": now,
        "slots": per_slot,
        "total": total,
        "equity": equity,
        "recent_commands": command_list(kernel=kernel, limit=20),
        "recent_reloads": reloads,
    }
