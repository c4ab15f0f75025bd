"""The whole API a strategy module may use.

A strategy is a module in ``strategies/`` that imports only this module, the
standard library, numpy, and its sibling helper modules (relative imports). It
defines:

- ``Params``: a subclass of :class:`StrategyParams` (pydantic) with defaults;
- ``evaluate(ctx: Context) -> Decision``: a pure function of ``ctx``;
- optionally ``warmup(params) -> int``: how many closed candles it needs
  (default 100);
- optionally ``STATE_SCHEMA: int`` and ``migrate_state(state, from_schema) ->
  dict``: how state handed back by an older version is carried forward
  (OTP's ``code_change``).

It keeps nothing at module level that changes: what it wants to remember it
returns in ``Decision.state`` and gets back next cycle as ``ctx.state``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import StrategyFault

__all__ = [
    "Candle",
    "Context",
    "Decision",
    "StrategyParams",
    "Field",
    "field_validator",
    "model_validator",
    "ENTER",
    "EXIT",
    "HOLD",
]

ENTER = "enter"
EXIT = "exit"
HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Candle:
    """One closed candle. ``ts`` is the open time in ms since the epoch (UTC)."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class StrategyParams(BaseModel):
    """Base of every strategy's params model: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a cycle knows, handed to ``evaluate``. Read-only."""

    slot: str
    symbol: str
    timeframe: str
    now_ms: int  # the candle close this cycle is for
    candles: tuple[Candle, ...]  # closed candles, oldest first, last one closes at now_ms
    position: float  # base-asset quantity held by this slot (long only: >= 0)
    entry_price: float | None  # average entry price of the position, if any
    params: StrategyParams
    state: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    entries_allowed: bool = True  # False while the kernel or the slot is paused
    # The open time (ms) of the candle this cycle is for: the one that closed at now_ms. The
    # kernel always sets it, and calls evaluate only when candles[-1] is that candle (a cycle
    # without it is recorded ``skipped``); None only in a Context built by hand.
    candle_ms: int | None = None

    @property
    def closes(self) -> list[float]:
        return [c.close for c in self.candles]


@dataclass(frozen=True, slots=True)
class Decision:
    """What a strategy wants this cycle.

    ``action``: ``"enter"`` (open a long position of the slot's order size),
    ``"exit"`` (close the position) or ``"hold"``. ``state``: a JSON-serialisable
    dict the kernel stores and hands back next cycle (``None`` keeps the old one).

    An enter or exit is a market order unless ``limit_price`` is set: then it is a limit
    order at that price, which rests until it fills, or until its ``time_in_force`` ends:
    ``"GTC"`` (until filled or cancelled), ``"IOC"`` (what fills at once, the rest is
    cancelled), or expiry after ``expire_candles`` candles of the slot's timeframe, or at
    ``expire_at_ms`` (ms since the epoch, UTC). A bad combination is a :class:`StrategyFault`
    naming the field, raised where the Decision is built.
    """

    action: Literal["enter", "exit", "hold"] = HOLD
    reason: str = ""
    state: dict[str, Any] | None = None
    limit_price: float | None = None
    time_in_force: Literal["GTC", "IOC"] = "GTC"
    expire_candles: int | None = None
    expire_at_ms: int | None = None

    def __post_init__(self) -> None:
        if self.action not in (ENTER, EXIT, HOLD):
            raise ValueError(f"Decision.action must be enter, exit or hold, not {self.action!r}")
        problem = self._limit_problem()
        if problem is not None:
            raise StrategyFault(f"bad Decision: {problem}")

    def _limit_problem(self) -> str | None:
        limit = self.limit_price
        if limit is None:
            if self.time_in_force != "GTC" or self.expire_candles is not None or self.expire_at_ms is not None:
                return "time_in_force, expire_candles and expire_at_ms need a limit_price (market orders have none)"
            return None
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit) or limit <= 0:
            return f"limit_price must be a finite number > 0, not {limit!r}"
        if self.action == HOLD:
            return "a hold sends no order: it takes no limit_price"
        if self.time_in_force not in ("GTC", "IOC"):
            return f"time_in_force must be 'GTC' or 'IOC', not {self.time_in_force!r}"
        if self.expire_candles is not None and self.expire_at_ms is not None:
            return "give expire_candles or expire_at_ms, not both"
        if self.time_in_force == "IOC" and (self.expire_candles is not None or self.expire_at_ms is not None):
            return "an IOC order never rests: it takes no expiry"
        for name in ("expire_candles", "expire_at_ms"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                return f"{name} must be a whole number >= 1, not {value!r}"
        return None

    @classmethod
    def hold(cls, reason: str = "", state: dict[str, Any] | None = None) -> "Decision":
        return cls(HOLD, reason, state)

    @classmethod
    def enter(cls, reason: str = "", state: dict[str, Any] | None = None, *, limit_price: float | None = None,
              time_in_force: Literal["GTC", "IOC"] = "GTC", expire_candles: int | None = None,
              expire_at_ms: int | None = None) -> "Decision":
        return cls(ENTER, reason, state, limit_price, time_in_force, expire_candles, expire_at_ms)

    @classmethod
    def exit(cls, reason: str = "", state: dict[str, Any] | None = None, *, limit_price: float | None = None,
             time_in_force: Literal["GTC", "IOC"] = "GTC", expire_candles: int | None = None,
             expire_at_ms: int | None = None) -> "Decision":
        return cls(EXIT, reason, state, limit_price, time_in_force, expire_candles, expire_at_ms)
