"""Number formats of the operators' pages: money, signed P&L, percentages, short hashes.

Every number is shown rounded (the market's precision when it is known, else sensible
decimals) with its full value in a ``title``: the hover shows what the kernel reported."""
from __future__ import annotations

import math

from django import template
from django.utils.html import format_html

register = template.Library()

MAX_DECIMALS = 10


def _num(value) -> float | None:
    try:
        v = None if value is None or value == "" or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None
    return v if v is None or math.isfinite(v) else None


def sensible_decimals(value: float) -> int:
    """2 decimals from 100 up, 4 from 1 up, else 4 significant digits (0.009347699 -> 0.009348)."""
    a = abs(value)
    if a == 0 or a >= 100:
        return 2
    if a >= 1:
        return 4
    leading_zeros = -math.floor(math.log10(a)) - 1
    return min(leading_zeros + 4, MAX_DECIMALS)


def rounded(value, digits=None, *, signed: bool = False, grouped: bool = True) -> str | None:
    """The rounded text of ``value`` (None for no number): ``digits`` decimals, or sensible ones."""
    v = _num(value)
    if v is None:
        return None
    d = sensible_decimals(v) if digits in (None, "") else int(digits)
    text = f"{v:{'+' if signed else ''}{',' if grouped else ''}.{d}f}"
    if float(text.replace(",", "")) == 0:
        text = text.replace("-", "").replace("+", "")  # no "-0.00"
    return text


@register.filter
def num(value, digits=None) -> str:
    """``{{ x|num }}`` or ``{{ x|num:8 }}``: rounded, the full value on hover."""
    text = rounded(value, digits)
    if text is None:
        return "—"
    return format_html('<span class="fs-num" title="{}">{}</span>', repr(float(value)), text)


@register.filter
def money(value, digits: int = 2) -> str:
    return num(value, digits)


@register.filter
def pnl(value, digits: int = 2) -> str:
    """Signed, coloured: green for a gain, red for a loss; the full value on hover."""
    text = rounded(value, digits, signed=True)
    if text is None:
        return "—"
    v = float(value)
    css = "fs-pos" if v > 0 else "fs-neg" if v < 0 else ""
    return format_html('<span class="fs-num {}" title="{}">{}</span>', css, repr(v), text)


@register.filter
def percent(value) -> str:
    """A ratio (0.5) as a percentage (50.0 %); no trades means no rate."""
    v = _num(value)
    return "—" if v is None else f"{v * 100:.1f} %"


@register.filter
def qty(value) -> str:
    """A quantity: sensible decimals (a market's step is not in the status), the full value on hover."""
    return num(value)


@register.filter
def shortsha(value) -> str:
    return (value or "")[:8]
