"""Reads of what the kernels traded, as the console mirrors it (services/status_mirror.py):
fills, each slot's position and P&L, the equity series. For the API (trading/api_trading.py)."""
from __future__ import annotations

from datetime import datetime, timezone as dt_timezone
from typing import Any

from django.db.models import QuerySet

from .models import EquitySample, Fill, Kernel, Slot

__all__ = ["equity_series", "fills_page", "slot_positions"]


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt_timezone.utc)  # a time without an offset is UTC, as everywhere in the console


def fills_page(*, kernel: Kernel, slot: str | None = None, since: datetime | None = None,
               offset: int = 0, limit: int = 100) -> dict[str, Any]:
    """The kernel's fills, newest first (of one slot, from ``since``): one page, and how many match."""
    qs: QuerySet[Fill] = Fill.objects.filter(kernel=kernel)
    if slot:
        qs = qs.filter(slot_id=slot)
    if since is not None:
        qs = qs.filter(at__gte=_utc(since))
    qs = qs.order_by("-at", "-id")
    return {"count": qs.count(), "limit": limit, "offset": offset, "items": list(qs[offset:offset + limit])}


def slot_positions(*, kernel: Kernel) -> list[Slot]:
    """Each slot of the kernel with its position, entry, realised and unrealised P&L, as last reported."""
    return list(Slot.objects.filter(kernel=kernel).order_by("slot_id"))


def equity_series(*, kernel: Kernel, since: datetime | None = None, until: datetime | None = None,
                  limit: int = 1000) -> dict[str, Any]:
    """Equity samples in time order between ``since`` and ``until``; the newest ``limit`` of
    them when there are more (``truncated`` says so), so a chart always reaches now."""
    qs: QuerySet[EquitySample] = EquitySample.objects.filter(kernel=kernel)
    if since is not None:
        qs = qs.filter(at__gte=_utc(since))
    if until is not None:
        qs = qs.filter(at__lte=_utc(until))
    count = qs.count()
    items = list(qs.order_by("-at", "-id")[:limit])[::-1]
    return {"count": count, "truncated": count > len(items), "items": items}
