"""The public control-plane protocol: what control.json and status.json hold.

Everything that reads or writes those files (the kernel, kernelctl, the console)
uses these models. docs/control-plane.md describes them with examples.
"""
from __future__ import annotations

import re
from functools import lru_cache
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PROTOCOL_VERSION = 1

KERNEL_ACTIONS = ("start", "stop", "pause", "resume", "reload", "rollback", "release", "versions.prune",
                  "promote")
SLOT_ACTIONS = ("slot.pause", "slot.resume", "slot.flatten", "slot.configure", "slot.add")
ACTIONS = KERNEL_ACTIONS + SLOT_ACTIONS

TIMEFRAMES: dict[str, int] = {  # timeframe -> seconds
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}

# The protocol's vocabulary, as patterns: the console's API schemas use these same strings.
COMMAND_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
SLOT_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
STRATEGY_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
SYMBOL_PATTERN = r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$"

ID_RE = re.compile(COMMAND_ID_PATTERN)
SLOT_ID_RE = re.compile(SLOT_ID_PATTERN)
STRATEGY_RE = re.compile(STRATEGY_NAME_PATTERN)
SYMBOL_RE = re.compile(SYMBOL_PATTERN)

KernelState = Literal["starting", "running", "paused", "stopped", "halted"]
SlotState = Literal["active", "paused", "disabled"]
CommandResult = Literal["applied", "rejected"]


def utcnow_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms_to_iso(ms: int | float | None) -> str | None:
    if ms is None:
        return None
    return _ms_to_iso(int(ms))


@lru_cache(maxsize=8192)  # thousands of slots share a handful of candle times per status
def _ms_to_iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


# --------------------------------------------------------------------- control.json


class Command(BaseModel):
    """One command in control.json. ``action`` is checked by the kernel, so that an
    unknown action is rejected (and reported) on its own instead of spoiling the file."""

    model_config = ConfigDict(extra="forbid")

    id: str
    action: str
    slot: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    issued_by: str | None = None
    issued_at: str | None = None

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not ID_RE.match(v):
            raise ValueError(
                "command id must be 1-128 characters of letters, digits and . _ : @ -, "
                "starting with a letter or digit"
            )
        return v


class ControlFile(BaseModel):
    """control.json. ``halt`` is interpreted by :func:`halt_requested`, never by type."""

    model_config = ConfigDict(extra="forbid")

    halt: Any = None
    commands: list[Command] = Field(default_factory=list)


def halt_requested(value: Any) -> bool:
    """In doubt, stop: any value but false or null (or absent) asks for a halt."""
    return not (value is None or value is False)


def halt_id(value: Any) -> str | None:
    """The halt's ``id`` (a command id, so that one grep follows it into the kernel's log and
    status.json), when ``halt`` is an object holding a well-formed one. A halt without one,
    or with a malformed one, still halts: it just has no id."""
    if isinstance(value, dict) and isinstance(value.get("id"), str) and ID_RE.match(value["id"]):
        return value["id"]
    return None


def halt_reason(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reason"), str):
        return value["reason"]
    if isinstance(value, str) and value.strip():
        return value
    return None


# --------------------------------------------------------------------- slot configuration


class SlotConfig(BaseModel):
    """A slot: one strategy trading one symbol on one timeframe, and its risk limits."""

    model_config = ConfigDict(extra="forbid")

    id: str
    symbol: str
    timeframe: str
    strategy: str
    params: dict[str, Any] = Field(default_factory=dict)
    order_notional: float = Field(100.0, gt=0, description="quote amount spent per entry")
    max_position: float | None = Field(None, gt=0, description="max base quantity held")
    max_notional: float = Field(1000.0, gt=0, description="max quote value of the position")
    max_orders_per_minute: int = Field(6, ge=1)
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _slot_id(cls, v: str) -> str:
        if not SLOT_ID_RE.match(v):
            raise ValueError("slot id must be 1-64 characters of a-z, 0-9, . _ -")
        return v

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        if not SYMBOL_RE.match(v):
            raise ValueError("symbol must look like BASE/QUOTE in capitals, e.g. BTC/USDT")
        return v

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, v: str) -> str:
        if v not in TIMEFRAMES:
            raise ValueError(f"timeframe must be one of {', '.join(TIMEFRAMES)}")
        return v

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        if not STRATEGY_RE.match(v):
            raise ValueError("strategy must be a module name of strategies/ (a-z, 0-9, _)")
        return v


# --------------------------------------------------------------------- status.json


class HaltStatus(BaseModel):
    engaged: bool = False
    since: str | None = None
    reason: str | None = None
    cancelled_orders: list[str] = Field(default_factory=list)
    cancel_failed: list[dict[str, Any]] = Field(default_factory=list)  # {"client_order_id", "error"}
    cancels_pending: bool = False  # the cancels run off the tick thread; false once they are done
    observed_at_ns: int | None = None  # wall clock (ns since the epoch) when the kernel observed it
    command_id: str | None = None  # the halt block's ``id`` in control.json, when it had one


class WorkingTreeStatus(BaseModel):
    sha256: str | None = None  # None: a file of the running version is missing from strategies/
    differs: bool = False


class CanaryStatus(BaseModel):
    """A canary (reload with ``slots``): its version on those slots, on a budget."""

    version: int
    sha256: str
    slots: list[str]
    since: str
    budget: dict[str, int]  # {"cycles": N, "faults": K}
    state: Literal["running", "passed", "auto_rolled_back", "rolled_back", "promoted"]
    counts: dict[str, int]  # {"cycles", "faults"}: on the canary slots, faults within the budget's cycles
    reason: str | None = None  # why it was rolled back automatically
    ended_at: str | None = None
    recent_bad: list[dict[str, Any]] = Field(default_factory=list)  # {"slot", "candle", "reason"}
    command_id: str | None = None


class ShadowSlotStatus(BaseModel):
    evaluations: int = 0
    differences: int = 0  # evaluations whose action differed from the live cycle's
    skipped: int = 0  # not evaluated: the slot's previous one still waited, or a halt
    faults: int = 0
    busy_us: int = 0  # time spent on its evaluations, on the shadow's own thread
    last_fault: str | None = None
    done: bool = False
    last_differences: list[dict[str, Any]] = Field(default_factory=list)  # {"candle", "live", "shadow", ...}


class ShadowStatus(BaseModel):
    """A shadow (reload with ``"shadow": true``): evaluated beside the live version, no orders."""

    version: int
    sha256: str
    slots: list[str]
    since: str
    cycles: int  # evaluations per slot before it is done
    done: bool = False
    fault: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)  # summed over the slots
    per_slot: dict[str, ShadowSlotStatus] = Field(default_factory=dict)
    command_id: str | None = None


class StrategyStatus(BaseModel):
    version: int
    sha256: str
    loaded_at: str
    files: dict[str, str] = Field(default_factory=dict)  # file -> sha256
    previous: dict[str, Any] | None = None  # {"version", "sha256"} kept for rollback
    # Drift: the sha256 the strategies folder's copies of these files make, and whether it
    # differs from what runs (a restart runs the stored version; nothing changes until a reload).
    working_tree: WorkingTreeStatus | None = None
    canary: CanaryStatus | None = None  # the running canary, else the last one that ended
    shadow: ShadowStatus | None = None  # the running shadow (done or not)


class ReloadStatus(BaseModel):
    at: str | None = None
    strategy: str | None = None
    result: Literal["loaded", "unchanged", "failed", "abandoned", "rolled_back", "canary_started",
                    "shadow_started", "promoted", "canary_rolled_back", "shadow_discarded",
                    "auto_rolled_back"] | None = None
    error: str | None = None
    lock_wait_ms: float | None = None
    old_sha256: str | None = None
    new_sha256: str | None = None
    command_id: str | None = None


class CommandStatus(BaseModel):
    id: str
    action: str
    slot: str | None = None
    result: CommandResult
    error: str | None = None
    at: str
    detail: dict[str, Any] | None = None


class PositionStatus(BaseModel):
    qty: float = 0.0
    entry_price: float | None = None
    realized_pnl: float = 0.0  # closed round trips' P&L + the open one's entry fees (kernel.round_trips)
    trades: int = 0  # closed round trips
    wins: int = 0  # closed round trips with P&L > 0 (entry and exit fees included)


class FillStatus(BaseModel):
    fill_id: str
    client_order_id: str
    slot: str
    side: str
    qty: float
    price: float
    fee: float
    ts_ms: int
    pnl: float | None = None  # realized P&L of a sell, its own fee included
    seq: int | None = None
    round_trip_pnl: float | None = None  # on the fill closing a round trip: its P&L, entry and exit fees included
    fee_currency: str | None = None  # the currency the fee was charged in (fee itself is in the quote)
    fee_rate_used: float | None = None  # quote per unit of fee_currency used to convert it
    fee_native: float | None = None  # the fee as charged, in fee_currency


class SlotStatus(BaseModel):
    id: str
    symbol: str
    timeframe: str
    strategy: str
    strategy_version: int | None = None  # the version its next cycle runs
    strategy_sha256: str | None = None
    last_cycle_version: int | None = None  # the version its last cycle ran (null before one, since start)
    last_cycle_sha256: str | None = None
    state: SlotState
    fault: str | None = None
    position: PositionStatus = Field(default_factory=PositionStatus)
    last_cycle_at: str | None = None
    next_cycle_at: str | None = None
    cycles: int = 0
    missed_cycles: int = 0
    late_cycles: int = 0
    errors: int = 0
    last_price: float | None = None
    unrealized_pnl: float | None = None
    last_order: dict[str, Any] | None = None  # the last order's summary (status, error: rejected...)
    dust_qty: float = 0.0  # left below the market's minimum: flat for trading, reported on its own
    unsellable: str | None = None  # why the position cannot be sold (below the market's minimum), said once
    resting_orders: list[dict[str, Any]] = Field(default_factory=list)  # limit orders resting (kernel.resting_orders)
    config: SlotConfig | None = None


class LedgerSummary(BaseModel):
    orders: int = 0
    open_orders: int = 0
    fills: int = 0
    realized_pnl: float = 0.0
    fees: float = 0.0
    trades: int = 0  # closed round trips, all slots (kernel.round_trips)
    wins: int = 0
    trades_pending: int = 0  # orders final at the broker whose trades are still being fetched
    cash: float | None = None
    equity: float | None = None  # cash + positions at their last prices
    unrealized_pnl: float | None = None
    reconciled: dict[str, Any] | None = None


class Status(BaseModel):
    protocol: int = PROTOCOL_VERSION
    state: KernelState
    heartbeat_at: str
    clock_at: str | None = None
    speed: float | None = 1.0  # clock time per wall time; null: unbounded (a replay at --speed inf)
    tick: int = 0
    tick_ms: int = 100
    pid: int
    started_at: str | None = None
    halt: HaltStatus = Field(default_factory=HaltStatus)
    broker: dict[str, Any] | None = None  # {"name", "exchange", "sandbox", "dead_man_switch"...}: never keys
    strategies: dict[str, StrategyStatus] = Field(default_factory=dict)
    reload: ReloadStatus = Field(default_factory=ReloadStatus)
    reloads: list[ReloadStatus] = Field(default_factory=list)  # recent, newest last
    commands: list[CommandStatus] = Field(default_factory=list)  # recent, newest last
    pending_commands: list[str] = Field(default_factory=list)
    control_error: str | None = None
    slots: list[SlotStatus] = Field(default_factory=list)
    fills: list[FillStatus] = Field(default_factory=list)  # recent, oldest first
    ledger: LedgerSummary = Field(default_factory=LedgerSummary)
    cycles: dict[str, Any] = Field(default_factory=dict)  # totals: ran, missed, late, halted, skipped, lag
    metrics_url: str | None = None  # the kernel's Prometheus exporter (runkernel --metrics-addr); None: off
