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

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    """

    action: Literal["enter", "exit", "hold"] = HOLD
    reason: str = ""
    state: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.action not in (ENTER, EXIT, HOLD):
            raise ValueError(f"Decision.action must be enter, exit or hold, not {self.action!r}")

    @classmethod
    def hold(cls, reason: str = "", state: dict[str, Any] | None = None) -> "Decision":
        return cls(HOLD, reason, state)

    @classmethod
    def enter(cls, reason: str = "", state: dict[str, Any] | None = None) -> "Decision":
        return cls(ENTER, reason, state)

    @classmethod
    def exit(cls, reason: str = "", state: dict[str, Any] | None = None) -> "Decision":
        return cls(EXIT, reason, state)
