"""``{% equity_chart series %}``: a kernel's equity over time as an inline SVG polyline.

Drawn on the server so the admin needs no JavaScript library and no CDN.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone as dt_timezone
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()

WIDTH, HEIGHT = 720, 200
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 74, 10, 10, 22


def _point(item: Any) -> tuple[datetime, float] | None:
    """A sample as (at, equity), from a dict, a (at, equity) pair or an object with those attributes."""
    if isinstance(item, dict):
        at, value = item.get("at"), item.get("equity")
    elif isinstance(item, (tuple, list)) and len(item) >= 2:
        at, value = item[0], item[1]
    else:
        at, value = getattr(item, "at", None), getattr(item, "equity", None)
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(at, datetime) or value is None:
        return None
    try:
        return at, float(value)
    except (TypeError, ValueError):
        return None


def equity_svg(series: Iterable[Any] | None, *, width: int = WIDTH, height: int = HEIGHT,
               start: datetime | None = None, end: datetime | None = None) -> SafeString:
    """``start``/``end``: the window's clock for the x axis (a gap in the samples shows as a
    gap); without them the axis runs from the first sample to the last."""
    points = sorted(p for p in map(_point, series or ()) if p is not None)
    if len(points) < 2:
        return format_html(
            '<p class="equity-empty help">{}</p>',
            "Not enough equity samples in this window to draw a chart yet.",
        )
    t0 = (start or points[0][0]).timestamp()
    t1 = (end or points[-1][0]).timestamp()
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span_t = (t1 - t0) or 1.0
    span_v = (hi - lo) or max(abs(hi) * 0.001, 1.0)
    plot_w = width - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM

    def xy(at: datetime, v: float) -> str:
        x = PAD_LEFT + (at.timestamp() - t0) / span_t * plot_w
        y = PAD_TOP + (hi - v) / span_v * plot_h
        return f"{x:.1f},{y:.1f}"

    polyline = " ".join(xy(at, v) for at, v in points)
    first, last = points[0][1], points[-1][1]
    colour = "#1a7f37" if last >= first else "#c62828"
    return format_html(
        '<svg class="equity-chart" role="img" aria-label="{label}" viewBox="0 0 {w} {h}" '
        'width="100%" preserveAspectRatio="none" style="max-width:{w}px;height:{h}px">'
        '<rect x="{pl}" y="{pt}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>'
        '<text x="{lx}" y="{ty}" text-anchor="end" font-size="11" fill="#666">{hi}</text>'
        '<text x="{lx}" y="{by}" text-anchor="end" font-size="11" fill="#666">{lo}</text>'
        '<text x="{pl}" y="{ay}" font-size="11" fill="#666">{start}</text>'
        '<text x="{rx}" y="{ay}" text-anchor="end" font-size="11" fill="#666">{end}</text>'
        '<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>'
        "</svg>",
        label=f"Equity from {first:,.2f} to {last:,.2f}",
        w=width, h=height, pl=PAD_LEFT, pt=PAD_TOP, pw=plot_w, ph=plot_h,
        lx=PAD_LEFT - 4, ty=PAD_TOP + 10, by=PAD_TOP + plot_h, ay=height - 6, rx=width - PAD_RIGHT,
        hi=f"{hi:,.2f}", lo=f"{lo:,.2f}",
        start=f"{(start or points[0][0]).astimezone(dt_timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
        end=f"{(end or points[-1][0]).astimezone(dt_timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
        colour=colour, points=polyline,
    )


@register.simple_tag
def equity_chart(series, width: int = WIDTH, height: int = HEIGHT, start=None, end=None) -> SafeString:
    return equity_svg(series, width=width, height=height, start=start, end=end)
