"""Number formats of the operators' pages: money, signed P&L, percentages, short hashes."""
from __future__ import annotations

from django import template
from django.utils.html import format_html

register = template.Library()


def _num(value) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


@register.filter
def money(value, digits: int = 2) -> str:
    v = _num(value)
    return "—" if v is None else f"{v:,.{int(digits)}f}"


@register.filter
def pnl(value) -> str:
    """Signed, coloured: green for a gain, red for a loss."""
    v = _num(value)
    if v is None:
        return "—"
    css = "fs-pos" if v > 0 else "fs-neg" if v < 0 else ""
    return format_html('<span class="{}">{}</span>', css, f"{v:+,.2f}")


@register.filter
def percent(value) -> str:
    """A ratio (0.5) as a percentage (50.0 %); no trades means no rate."""
    v = _num(value)
    return "—" if v is None else f"{v * 100:.1f} %"


@register.filter
def qty(value) -> str:
    v = _num(value)
    return "—" if v is None else f"{v:.8g}"


@register.filter
def shortsha(value) -> str:
    return (value or "")[:8]
