"""Request (In) and response (Out) schemas of the Ninja API. Explicit fields only."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from ninja import Field, ModelSchema, Schema
from pydantic import ConfigDict, field_validator

from kernel.protocol import STRATEGY_NAME_PATTERN, SYMBOL_PATTERN, TIMEFRAMES

from .console_health import kernel_stale
from .models import ApiToken, AuditEvent, ControlCommand, Kernel, Slot

# The protocol's patterns (slot ids, strategy names, symbols, command ids) come from
# kernel.protocol; a kernel's name is the console's own (a slug, as kernel_register checks).
NAME_PATTERN = r"^[-a-zA-Z0-9_]{1,64}$"
# A bound on numbers a client may send, so no value can overflow a database column.
MAX_AMOUNT = 1e15


# ===================================================================== errors


class ErrorOut(Schema):
    detail: str = Field(..., description="what went wrong, for the operator")
    errors: Optional[Any] = Field(None, description="field → message, for invalid input")


# ===================================================================== kernels


class KernelOut(ModelSchema):
    class Meta:
        model = Kernel
        fields = [
            "name", "host", "queue", "state_dir", "state", "heartbeat_at", "pid", "tick", "halt_engaged",
            "halt_since", "halt_reason", "halt_requested_at", "control_error", "status_synced_at",
        ]

    stale: bool = Field(False, description="no heartbeat for FORESIGHT_STALE_AFTER_S seconds (a clean stop is not stale)")

    @staticmethod
    def resolve_stale(obj: Kernel) -> bool:
        return kernel_stale(obj)


class KernelHealthOut(Schema):
    name: str
    state: str = Field(..., description="as the kernel last reported it")
    condition: str = Field(..., description="halted, not reporting, stopped, or the state")
    stale: bool
    halted: bool
    heartbeat_age_s: Optional[float] = Field(None, description="seconds since the last heartbeat; null: never")
    faulted_slots: int
    problems: list[str] = Field(..., description="what needs a human: halted, stale, faulted, control_error")


class FleetHealthOut(Schema):
    ok: bool = Field(..., description="false (and status 503) when any kernel is stale, halted or faulted")
    kernels: list[KernelHealthOut]


class KernelDetailOut(KernelOut):
    status: dict[str, Any] = Field(default_factory=dict, description="the kernel's last status.json, whole")
    sync: dict[str, Any] = Field(default_factory=dict, description="what the status sync just did")


# ===================================================================== slots


class SlotOut(ModelSchema):
    kernel: str
    config_drift: dict[str, list[Any]] = Field(
        default_factory=dict, description="field → [configured, running] where they differ")

    class Meta:
        model = Slot
        fields = [
            "slot_id", "symbol", "timeframe", "strategy", "params", "order_notional", "max_position",
            "max_notional", "max_orders_per_minute", "enabled", "state", "fault", "strategy_version",
            "strategy_sha256", "position_qty", "entry_price", "last_price", "realized_pnl", "unrealized_pnl",
            "last_cycle_at", "next_cycle_at", "cycles", "missed_cycles", "running_config",
        ]

    @staticmethod
    def resolve_kernel(obj: Slot) -> str:
        return obj.kernel.name

    @staticmethod
    def resolve_config_drift(obj: Slot) -> dict[str, list[Any]]:
        return {k: list(v) for k, v in obj.config_drift().items()}


class SlotConfigPatchIn(Schema):
    """The fields to change; the others keep their value. ``params`` replaces the params whole."""

    model_config = ConfigDict(extra="forbid")

    symbol: Optional[str] = Field(None, pattern=SYMBOL_PATTERN, max_length=41)
    timeframe: Optional[str] = Field(None, description=f"one of {', '.join(TIMEFRAMES)}", max_length=8)
    strategy: Optional[str] = Field(None, pattern=STRATEGY_NAME_PATTERN)
    params: Optional[dict[str, Any]] = None
    order_notional: Optional[float] = Field(None, gt=0, le=MAX_AMOUNT)
    max_position: Optional[float] = Field(None, gt=0, le=MAX_AMOUNT)
    max_notional: Optional[float] = Field(None, gt=0, le=MAX_AMOUNT)
    max_orders_per_minute: Optional[int] = Field(None, ge=1, le=100_000)
    enabled: Optional[bool] = None


# ===================================================================== commands


class CommandOut(ModelSchema):
    kernel: str

    class Meta:
        model = ControlCommand
        fields = [
            "command_id", "action", "slot_id", "args", "actor", "source", "issued_at", "expires_at", "status",
            "delivered_at", "delivery_attempts", "resolved_at", "error", "detail",
        ]

    @staticmethod
    def resolve_kernel(obj: ControlCommand) -> str:
        return obj.kernel.name


class CommandAcceptedOut(Schema):
    """202: the command is recorded and (normally) written into the kernel's control.json.
    ``status`` is pending, delivered, or (after ``wait``) the kernel's applied/rejected."""

    command_id: Optional[str] = Field(None, description="null only for a halt whose record was spooled")
    kernel: str
    action: str
    slot_id: str = ""
    status: str
    error: str = ""
    detail: Optional[dict[str, Any]] = None
    message: str = Field("", description="the fate in one line, with what the kernel reported: a reload's "
                                         "old → new version and sha256, a flatten's fill price and P&L, a "
                                         "rejection's reason")
    audit: str = Field("recorded", description="recorded, or spooled when the database was unavailable")


class ReloadIn(Schema):
    model_config = ConfigDict(extra="forbid")

    strategy: Optional[str] = Field(None, pattern=STRATEGY_NAME_PATTERN, description="one strategy; all when absent")


class RollbackIn(Schema):
    model_config = ConfigDict(extra="forbid")

    strategy: str = Field(..., pattern=STRATEGY_NAME_PATTERN)


class HaltIn(Schema):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(..., min_length=1, max_length=500)


class ReleaseIn(Schema):
    model_config = ConfigDict(extra="forbid")

    # Optional here so that clients which post no body keep working; the admin's page requires one.
    reason: Optional[str] = Field(None, max_length=500, description="why; goes into the audit log")


# ===================================================================== audit


class AuditEventOut(ModelSchema):
    class Meta:
        model = AuditEvent
        fields = [
            "id", "at", "actor", "user_id", "source", "ip", "action", "kernel_name", "slot_id", "command_id",
            "outcome", "payload",
        ]


class AuditFilters(Schema):
    action: Optional[str] = Field(None, max_length=64, description="exact, or a prefix ending in * or .")
    actor: Optional[str] = Field(None, max_length=200)
    kernel: Optional[str] = Field(None, max_length=64)
    slot: Optional[str] = Field(None, max_length=64)
    command_id: Optional[str] = Field(None, max_length=128)
    since: Optional[datetime] = None
    until: Optional[datetime] = None
    limit: int = Field(100, ge=1, le=500)
    offset: int = Field(0, ge=0, le=1_000_000_000)

    @field_validator("since", "until")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        # Python takes offsets up to ±24 h, PostgreSQL only up to ±15:59: compare in UTC.
        if value is None or value.tzinfo is None:
            return value
        try:
            return value.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("out of range once in UTC") from None


class AuditPageOut(Schema):
    count: int
    limit: int
    offset: int
    items: list[AuditEventOut]


# ===================================================================== tokens


class TokenIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=100)


class TokenOut(ModelSchema):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]


class TokenCreatedOut(TokenOut):
    token: str = Field(..., description="the raw token: shown once, store it now")
