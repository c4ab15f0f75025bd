"""The report page of a kernel (issue 12, item 9): the figures of kernel/report.py over the
console's mirrored fills and equity samples (trading/report_reads.py), the equity curve as an
inline SVG (trading/templatetags/equity_chart.py), per-slot results and every trade. Registered
by the Kernel admin (ReportViewMixin before its other bases); one read per view."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path, reverse

from kernel.protocol import SLOT_ID_PATTERN
from kernel.report_format import duration, iso, num, pct, summary_rows

from ..report_reads import kernel_report
from ..templatetags.equity_chart import equity_svg

_SLOT = re.compile(SLOT_ID_PATTERN)


def _day(text: str, *, end: bool) -> datetime | None:
    """A ``YYYY-MM-DD`` (the form's date inputs) as the start of that UTC day, or its last ms."""
    try:
        at = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return at.replace(hour=23, minute=59, second=59, microsecond=999_000) if end else at


def _trade_row(t) -> dict:
    return {
        "slot": t.slot, "symbol": t.symbol, "entry_at": iso(t.entry_ms), "entry_price": f"{t.entry_price:.8g}",
        "exit_at": iso(t.exit_ms) or "open", "exit_price": "-" if t.exit_price is None else f"{t.exit_price:.8g}",
        "qty": f"{t.qty:.8g}", "fees": num(t.fees, 4), "pnl": "open" if t.pnl is None else num(t.pnl, 4),
        "return": pct(t.return_pct), "duration": duration(None if t.exit_ms is None else t.exit_ms - t.entry_ms),
        "version": "-" if t.version is None else f"v{t.version}", "sha256": (t.sha256 or "")[:12],
        "win": t.pnl is not None and t.pnl > 0, "loss": t.pnl is not None and t.pnl < 0,
    }


class ReportViewMixin:
    """For KernelAdmin: ``<kernel>/report/`` (its get_kernel checks the view permission)."""

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [path("<path:object_id>/report/", wrap(self.report_view), name="trading_kernel_report"),
                *super().get_urls()]

    def report_view(self, request: HttpRequest, object_id: str):
        kernel = self.get_kernel(request, object_id)
        slot = request.GET.get("slot", "").strip()
        slot = slot if _SLOT.match(slot) else ""
        since, until = request.GET.get("since", ""), request.GET.get("until", "")
        report = kernel_report(kernel=kernel, slot_id=slot or None, since=_day(since, end=False),
                               until=_day(until, end=True))
        curve = [(datetime.fromtimestamp(ts / 1000, tz=timezone.utc), v) for ts, v in report.equity]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "kernel": kernel,
            "title": f"{kernel.name}: report",
            "subtitle": None,
            "report": report,
            "summary": summary_rows(report),
            "per_slot": [{**s, "win_rate": pct(s["win_rate"]), "pnl": num(s["pnl"]), "avg_pnl": num(s["avg_pnl"]),
                          "avg_return": pct(s["avg_return_pct"]), "fees": num(s["fees"]),
                          "avg_duration": duration(s["avg_duration_ms"]), "best": num(s["best_pnl"]),
                          "worst": num(s["worst_pnl"])} for s in report.per_slot],
            "trades": [_trade_row(t) for t in reversed(report.trade_list)],  # newest first
            "equity_chart": equity_svg(curve),
            "slots": sorted({s["slot"] for s in report.per_slot} | ({slot} if slot else set())),
            "slot": slot, "since": since if _day(since, end=False) else "",
            "until": until if _day(until, end=True) else "",
            "report_url": reverse("admin:trading_kernel_report", args=[kernel.pk]),
            "dashboard_url": reverse("admin:trading_kernel_dashboard", args=[kernel.pk]),
        }
        return TemplateResponse(request, "admin/trading/kernel/report.html", context)
