"""Request (In) and response (Out) schemas of the trading API (trading/api_trading.py):
fills, positions, the equity series, slot.add."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from ninja import Field, ModelSchema, Schema
from pydantic import ConfigDict, field_validator

from kernel.protocol import SLOT_ID_PATTERN, STRATEGY_NAME_PATTERN, SYMBOL_PATTERN, TIMEFRAMES

from .models import EquitySample, Fill, Slot
from .schemas import MAX_AMOUNT


def _in_utc(value: datetime | None) -> datetime | None:
    # Python takes offsets up to ±24 h, PostgreSQL only up to ±15:59: compare in UTC.
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("out of range once in UTC") from None


class FillFilters(Schema):
    slot: Optional[str] = Field(None, pattern=SLOT_ID_PATTERN, description="one slot's fills only")
    since: Optional[datetime] = Field(None, description="fills at or after this time (UTC unless an offset is given)")
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=1_000_000_000)

    @field_validator("since")
    @classmethod
    def _since_utc(cls, value: datetime | None) -> datetime | None:
        return _in_utc(value)


class FillOut(ModelSchema):
    class Meta:
        model = Fill
        fields = ["fill_id", "client_order_id", "slot_id", "side", "qty", "price", "fee", "pnl", "at"]


class FillPageOut(Schema):
    count: int = Field(..., description="how many fills match in all")
    limit: int
    offset: int
    items: list[FillOut] = Field(..., description="newest first")


class PositionOut(ModelSchema):
    class Meta:
        model = Slot
        fields = ["slot_id", "symbol", "timeframe", "strategy", "strategy_version", "state", "position_qty",
                  "entry_price", "last_price", "realized_pnl", "unrealized_pnl", "last_cycle_at"]


class EquityFilters(Schema):
    since: Optional[datetime] = None
    until: Optional[datetime] = None
    limit: int = Field(1000, ge=1, le=10_000, description="at most this many samples: the newest")

    @field_validator("since", "until")
    @classmethod
    def _bounds_utc(cls, value: datetime | None) -> datetime | None:
        return _in_utc(value)


class EquityPointOut(ModelSchema):
    class Meta:
        model = EquitySample
        fields = ["at", "equity", "cash", "realized_pnl", "unrealized_pnl"]


class EquitySeriesOut(Schema):
    count: int = Field(..., description="how many samples lie between since and until")
    truncated: bool = Field(..., description="true when only the newest `limit` of them are listed")
    items: list[EquityPointOut] = Field(..., description="oldest first")


class SlotAddIn(Schema):
    """A new slot; the kernel checks the strategy exists and ``params`` against its Params
    (a rejection names the field)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., pattern=SLOT_ID_PATTERN, description="the new slot's id, e.g. sol-15m")
    symbol: str = Field(..., pattern=SYMBOL_PATTERN, max_length=41, description="e.g. SOL/USDT")
    timeframe: str = Field(..., max_length=8, description=f"one of {', '.join(TIMEFRAMES)}")
    strategy: str = Field(..., pattern=STRATEGY_NAME_PATTERN, description="a module of strategies/")
    params: dict[str, Any] = Field(default_factory=dict)
    order_notional: Optional[float] = Field(None, gt=0, le=MAX_AMOUNT)
    max_position: Optional[float] = Field(None, gt=0, le=MAX_AMOUNT)
    max_notional: Optional[float] = Field(None, gt=0, le=MAX_AMOUNT)
    max_orders_per_minute: Optional[int] = Field(None, ge=1, le=100_000)
    enabled: Optional[bool] = None

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, value: str) -> str:
        if value not in TIMEFRAMES:
            raise ValueError(f"must be one of {', '.join(TIMEFRAMES)}")
        return value

    @field_validator("params")
    @classmethod
    def _flat_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > 100 or any(len(k) > 64 for k in value):
            raise ValueError("at most 100 params, each name at most 64 characters")
        return value
