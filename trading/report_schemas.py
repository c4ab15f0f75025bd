"""Response schemas of the report API (trading/api_reports.py): kernel/report_format.as_dict, typed."""
from __future__ import annotations

from typing import Optional

from ninja import Schema


class ReportTradeOut(Schema):
    slot: str
    symbol: str
    entry_ms: int
    entry_at: Optional[str]
    exit_ms: Optional[int]
    exit_at: Optional[str]
    entry_price: float
    exit_price: Optional[float]
    qty: float
    sold_qty: float
    fees: float
    pnl: Optional[float]  # the round trip's P&L, entry and exit fees included; null while open
    return_pct: Optional[float]  # pnl / what the entry cost (a fraction)
    duration_ms: Optional[int]
    is_open: bool
    version: Optional[int]  # the strategy version whose cycle opened it (null: unknown)
    sha256: Optional[str]


class ReportSlotOut(Schema):
    slot: str
    symbol: str
    trades: int
    open_trades: int
    wins: int
    draws: int
    losses: int
    win_rate: Optional[float]
    pnl: float
    avg_pnl: Optional[float]
    avg_return_pct: Optional[float]
    fees: float
    avg_duration_ms: Optional[float]
    best_pnl: Optional[float]
    worst_pnl: Optional[float]


class ReportOut(Schema):
    """Every figure is defined in docs/live-trading.md ("Report"); fractions, not percents."""

    kernel: str
    start_ms: Optional[int]
    start_at: Optional[str]
    end_ms: Optional[int]
    end_at: Optional[str]
    starting_equity: Optional[float]
    final_equity: Optional[float]
    total_return: Optional[float]
    cagr: Optional[float]
    realized_pnl: float
    closed_pnl: float
    fees: float
    fills: int
    trades: int
    open_trades: int
    wins: int
    draws: int
    losses: int
    win_rate: Optional[float]
    avg_pnl: Optional[float]
    avg_return_pct: Optional[float]
    best: Optional[ReportTradeOut]
    worst: Optional[ReportTradeOut]
    avg_duration_ms: Optional[float]
    profit_factor: Optional[float]
    avg_win: Optional[float]
    avg_loss: Optional[float]
    max_consecutive_wins: int
    max_consecutive_losses: int
    trades_per_day: Optional[float]
    min_equity: Optional[float]
    max_equity: Optional[float]
    max_drawdown: float
    max_drawdown_pct: float
    drawdown_start_ms: Optional[int]
    drawdown_start_at: Optional[str]
    drawdown_end_ms: Optional[int]
    drawdown_end_at: Optional[str]
    sharpe: Optional[float]
    sortino: Optional[float]
    calmar: Optional[float]
    days: int
    best_day: Optional[float]
    worst_day: Optional[float]
    winning_days: int
    draw_days: int
    losing_days: int
    exposure: Optional[float]
    traded_notional: float
    turnover: Optional[float]
    per_slot: list[ReportSlotOut]
    trade_list: list[ReportTradeOut]
    equity: list[tuple[int, float]]  # [ms, equity]
