"""Reading what a strategy gets handed: its params and the state it kept last cycle.

Defensive on purpose: state comes back from the kernel's store and may have been written
by an older version, so a value of the wrong type reads as missing, never as an error.
"""
from __future__ import annotations

from typing import Any, Mapping

from kernel.strategy_api import Context, StrategyParams


def params_of(ctx: Context, model: type[StrategyParams]) -> Any:
    """ctx.params as ``model``: already one, a plain mapping, None (defaults), or another
    generation's params model (same fields)."""
    p = ctx.params
    if isinstance(p, model):
        return p
    if p is None:
        return model()
    if isinstance(p, Mapping):
        return model.model_validate(dict(p))
    return model.model_validate(p.model_dump())


def int_of(state: Mapping[str, Any], key: str) -> int | None:
    v = state.get(key) if isinstance(state, Mapping) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None
