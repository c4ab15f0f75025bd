"""The report of a kernel in the console (its admin page and GET /api/kernels/{name}/report): the
mirrored fills and equity samples (trading/models.py Fill, EquitySample; slots give the symbols)
through the kernel's own computation (kernel/report.py), never figures of the console's own.

The mirror holds neither the strategy version that sent an order nor where the ledger closed a
round trip on dust: when the kernel's ledger is readable from here (the console and the kernel
on one host), both are taken from it, read-only (kernel/report_source.py); otherwise trades
show no version and a dust remainder keeps its round trip open.
"""
from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from kernel.report import Report, ReportFill, build_report
from kernel.report_source import read_state_dir

from .models import EquitySample, Fill, Kernel, Slot

log = logging.getLogger(__name__)

__all__ = ["kernel_report"]


def _ms(at: datetime) -> int:
    if at.tzinfo is None:  # a time without an offset is UTC, as kernelctl report reads it
        at = at.replace(tzinfo=timezone.utc)
    return int(round(at.timestamp() * 1000))


def _ledger_fills(kernel: Kernel) -> dict[str, ReportFill]:
    try:
        return {f.fill_id: f for f in read_state_dir(Path(kernel.state_dir)).fills if f.fill_id}
    except (OSError, sqlite3.Error, ValueError) as exc:
        log.debug("report of %s without its ledger (%s): no versions", kernel.name, exc)
        return {}


def kernel_report(*, kernel: Kernel, slot_id: str | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> Report:
    """The report of ``kernel`` over what the console mirrored (narrowed to a slot, a window)."""
    symbols = dict(Slot.objects.filter(kernel=kernel).values_list("slot_id", "symbol"))
    from_ledger = _ledger_fills(kernel)
    fills = []
    for f in Fill.objects.filter(kernel=kernel).order_by("at", "id"):
        known = from_ledger.get(f.fill_id)
        fills.append(ReportFill(
            slot=f.slot_id, symbol=symbols.get(f.slot_id) or (known.symbol if known else "?"), side=f.side,
            qty=f.qty, price=f.price, fee=f.fee, ts_ms=_ms(f.at), fill_id=f.fill_id,
            version=known.version if known else None, sha256=known.sha256 if known else None,
            closes=known.closes if known else False))
    samples = [(_ms(at), equity) for at, equity in
               EquitySample.objects.filter(kernel=kernel).order_by("at", "id").values_list("at", "equity")]
    times = [f.ts_ms for f in fills] + [t for t, _ in samples]
    start, end = (min(times), max(times)) if times else (None, None)
    # The samples are the whole account's: one slot's curve is its own fills from the first sample.
    equity = samples if slot_id is None else None
    return build_report(fills, starting_equity=samples[0][1] if samples else None, start_ms=start, end_ms=end,
                        equity=equity or None, slot=slot_id, since_ms=_ms(since) if since else None,
                        until_ms=_ms(until) if until else None)
