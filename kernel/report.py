"""The report of a ledger (replay or live): its figures, computed once for kernelctl, the console
page and the API. Pure: fills and an equity series in, a :class:`Report` out.

Round trips and their P&L are :mod:`kernel.round_trips`' (each fill goes through
``apply_fill``; a sell the ledger closed as dust goes through ``settle``): the report never
re-derives P&L, so its realised P&L is the ledger's to the cent. Definitions of every figure
are in docs/live-trading.md ("Report").
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from .round_trips import EPS, Book, apply_fill, settle

__all__ = ["ReportFill", "Trade", "Report", "build_report", "equity_from_fills", "DAY_MS", "PERIODS_PER_YEAR"]

DAY_MS = 86_400_000
PERIODS_PER_YEAR = 365  # crypto trades every day: per-day returns annualised by sqrt(365), like freqtrade


@dataclass(frozen=True, slots=True)
class ReportFill:
    slot: str
    symbol: str
    side: str  # buy | sell
    qty: float
    price: float
    fee: float  # in the quote currency
    ts_ms: int
    version: int | None = None  # the strategy version whose cycle sent the order (None: unknown, a flatten)
    sha256: str | None = None
    closes: bool = False  # the ledger closed a round trip on this fill (dust left below the minimum included)
    fill_id: str | None = None


@dataclass(slots=True)
class Trade:
    slot: str
    symbol: str
    entry_ms: int
    exit_ms: int | None  # None: still open
    entry_price: float  # average price of its buys
    exit_price: float | None  # average price of its sells
    qty: float  # bought
    fees: float  # entry and exit fees
    pnl: float | None  # round_trips' P&L (fees included); None while open
    return_pct: float | None  # pnl / what the entry cost
    version: int | None  # the strategy version that opened it
    sha256: str | None
    sold_qty: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.exit_ms is None


@dataclass(slots=True)
class Report:
    start_ms: int | None
    end_ms: int | None
    starting_equity: float | None
    final_equity: float | None
    total_return: float | None  # fraction
    cagr: float | None  # fraction per year
    realized_pnl: float  # round_trips' realised P&L over the window (entry fees of an open trade included)
    closed_pnl: float  # sum of the closed trades' P&L
    fees: float
    fills: int
    trades: int  # closed round trips
    open_trades: int
    wins: int
    draws: int
    losses: int
    win_rate: float | None
    avg_pnl: float | None
    avg_return_pct: float | None
    best: Trade | None
    worst: Trade | None
    avg_duration_ms: float | None
    profit_factor: float | None
    avg_win: float | None  # mean P&L of the winning closed trades
    avg_loss: float | None  # mean P&L of the losing ones (negative)
    max_consecutive_wins: int
    max_consecutive_losses: int
    trades_per_day: float | None
    min_equity: float | None
    max_equity: float | None
    max_drawdown: float  # quote
    max_drawdown_pct: float  # fraction of the peak
    drawdown_start_ms: int | None  # the peak
    drawdown_end_ms: int | None  # the trough
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    days: int  # per-day returns Sharpe/Sortino were computed over
    best_day: float | None  # the largest per-day return
    worst_day: float | None
    winning_days: int
    draw_days: int
    losing_days: int
    exposure: float | None  # fraction of the span with a position open
    traded_notional: float
    turnover: float | None  # traded notional / time-weighted average equity
    per_slot: list[dict[str, Any]] = field(default_factory=list)
    trade_list: list[Trade] = field(default_factory=list)
    equity: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__ if k not in ("best", "worst", "trade_list", "equity")}
        out["best"] = _trade_dict(self.best) if self.best else None
        out["worst"] = _trade_dict(self.worst) if self.worst else None
        out["trade_list"] = [_trade_dict(t) for t in self.trade_list]
        out["equity"] = [[ts, v] for ts, v in self.equity]
        return out


def _trade_dict(t: Trade) -> dict[str, Any]:
    d = asdict(t)
    d["is_open"] = t.is_open
    d["duration_ms"] = (t.exit_ms - t.entry_ms) if t.exit_ms is not None else None
    return d


# ---------------------------------------------------------------- round trips


@dataclass(slots=True)
class _Open:
    first: ReportFill
    buy_qty: float = 0.0
    buy_cost: float = 0.0
    sell_qty: float = 0.0
    sell_value: float = 0.0
    fees: float = 0.0


def _trade(o: _Open, *, exit_ms: int | None, pnl: float | None) -> Trade:
    entry = o.buy_cost / o.buy_qty if o.buy_qty > EPS else o.first.price
    return Trade(slot=o.first.slot, symbol=o.first.symbol, entry_ms=o.first.ts_ms, exit_ms=exit_ms,
                 entry_price=entry, exit_price=(o.sell_value / o.sell_qty) if o.sell_qty > EPS else None,
                 qty=o.buy_qty, fees=o.fees, pnl=pnl,
                 return_pct=(pnl / o.buy_cost) if pnl is not None and o.buy_cost > EPS else None,
                 version=o.first.version, sha256=o.first.sha256, sold_qty=o.sell_qty)


def _walk(fills: list[ReportFill]) -> tuple[list[Trade], list[float]]:
    """Round trips of all slots (closed and open) and each fill's change of realised P&L."""
    books: dict[str, Book] = {}
    opens: dict[str, _Open] = {}
    trades: list[Trade] = []
    deltas: list[float] = []
    for f in fills:
        book = books.get(f.slot, Book())
        before = book.realized_pnl
        cur = opens.get(f.slot)
        if f.side == "buy" and (book.qty <= EPS or cur is None):
            cur = opens[f.slot] = _Open(first=f)
        book, _, round_pnl = apply_fill(book, side=f.side, qty=f.qty, price=f.price, fee=f.fee)
        if cur is not None:
            cur.fees += f.fee
            if f.side == "buy":
                cur.buy_qty += f.qty
                cur.buy_cost += f.qty * f.price
            else:
                cur.sell_qty += f.qty
                cur.sell_value += f.qty * f.price
        if round_pnl is None and f.side == "sell" and f.closes:
            # The ledger found what was left below the market's minimum: dust, as it booked it.
            book, round_pnl = settle(book, book.qty)
        if round_pnl is not None and cur is not None:
            trades.append(_trade(cur, exit_ms=f.ts_ms, pnl=round_pnl))
            del opens[f.slot]
        books[f.slot] = book
        deltas.append(book.realized_pnl - before)
    trades.extend(_trade(o, exit_ms=None, pnl=None) for o in opens.values())
    trades.sort(key=lambda t: (t.entry_ms, t.slot))
    return trades, deltas


# ---------------------------------------------------------------- equity


def equity_from_fills(fills: Iterable[ReportFill], *, starting_equity: float,
                      start_ms: int) -> list[tuple[int, float]]:
    """Equity after each fill: cash (fees paid) plus every holding marked at its symbol's last
    fill price. The ledger keeps no price history, so between fills the curve is flat."""
    cash = starting_equity
    held: dict[str, float] = {}
    last: dict[str, float] = {}
    out = [(start_ms, starting_equity)]
    for f in fills:
        sign = 1.0 if f.side == "buy" else -1.0
        cash -= sign * f.qty * f.price + f.fee
        held[f.symbol] = held.get(f.symbol, 0.0) + sign * f.qty
        last[f.symbol] = f.price
        marked = sum(q * last[s] for s, q in held.items() if abs(q) > EPS)
        out.append((f.ts_ms, cash + marked))
    return out


def _value_at(equity: list[tuple[int, float]], ts: int, default: float) -> float:
    v = default
    for t, e in equity:
        if t > ts:
            break
        v = e
    return v


def _drawdown(equity: list[tuple[int, float]]) -> tuple[float, float, int | None, int | None]:
    """The largest fall from a peak, as a fraction of that peak: (abs, fraction, peak ms, trough ms)."""
    best = (0.0, 0.0, None, None)
    peak, peak_ms = -math.inf, None
    for ts, v in equity:
        if v > peak:
            peak, peak_ms = v, ts
        if peak > 0 and (peak - v) / peak > best[1]:
            best = (peak - v, (peak - v) / peak, peak_ms, ts)
    return best


def _daily_returns(equity: list[tuple[int, float]], start_ms: int, end_ms: int, start_value: float) -> list[float]:
    """Each UTC day's return, from the equity at the end of the previous day (the span's start for
    the first) to the equity at the end of the day (the span's end for the last)."""
    out, prev = [], start_value
    for day in range(start_ms // DAY_MS, end_ms // DAY_MS + 1):
        v = _value_at(equity, min((day + 1) * DAY_MS - 1, end_ms), start_value)
        out.append(v / prev - 1.0 if prev > 0 else 0.0)
        prev = v
    return out


def _time_weighted_mean(equity: list[tuple[int, float]], start_ms: int, end_ms: int) -> float | None:
    if not equity:
        return None
    if end_ms <= start_ms:
        return statistics.fmean(v for _, v in equity)
    total, ts_prev, v_prev = 0.0, start_ms, equity[0][1]
    for ts, v in equity:
        ts = min(max(ts, start_ms), end_ms)
        total += v_prev * (ts - ts_prev)
        ts_prev, v_prev = ts, v
    total += v_prev * (end_ms - ts_prev)
    return total / (end_ms - start_ms)


def _exposure(trades: list[Trade], start_ms: int, end_ms: int) -> float | None:
    """Fraction of the span during which at least one slot held a position (intervals merged)."""
    if end_ms <= start_ms:
        return None
    spans = sorted((max(t.entry_ms, start_ms), min(t.exit_ms if t.exit_ms is not None else end_ms, end_ms))
                   for t in trades)
    covered, cur_start, cur_end = 0, None, None
    for a, b in spans:
        if b <= a:
            continue
        if cur_end is None or a > cur_end:
            if cur_end is not None:
                covered += cur_end - cur_start
            cur_start, cur_end = a, b
        else:
            cur_end = max(cur_end, b)
    if cur_end is not None:
        covered += cur_end - cur_start
    return covered / (end_ms - start_ms)


# ---------------------------------------------------------------- the report


def _trade_stats(closed: list[Trade]) -> dict[str, Any]:
    pnls = [t.pnl for t in closed if t.pnl is not None]
    wins = sum(1 for p in pnls if p > 0)
    losses = sum(1 for p in pnls if p < 0)
    rets = [t.return_pct for t in closed if t.return_pct is not None]
    durations = [t.exit_ms - t.entry_ms for t in closed if t.exit_ms is not None]
    gross_win, gross_loss = sum(p for p in pnls if p > 0), -sum(p for p in pnls if p < 0)
    streaks = {"win": 0, "loss": 0}
    run_kind, run = None, 0
    for t in sorted(closed, key=lambda t: (t.exit_ms, t.slot)):  # in the order they closed
        kind = "win" if t.pnl > 0 else "loss" if t.pnl < 0 else None
        run = run + 1 if kind is not None and kind == run_kind else (1 if kind else 0)
        run_kind = kind
        if kind:
            streaks[kind] = max(streaks[kind], run)
    return {
        "trades": len(pnls), "wins": wins, "losses": losses, "draws": len(pnls) - wins - losses,
        "win_rate": wins / len(pnls) if pnls else None,
        "closed_pnl": sum(pnls),
        "avg_pnl": statistics.fmean(pnls) if pnls else None,
        "avg_return_pct": statistics.fmean(rets) if rets else None,
        "avg_duration_ms": statistics.fmean(durations) if durations else None,
        "profit_factor": gross_win / gross_loss if gross_loss > 0 else None,
        "avg_win": gross_win / wins if wins else None,
        "avg_loss": -gross_loss / losses if losses else None,
        "max_consecutive_wins": streaks["win"], "max_consecutive_losses": streaks["loss"],
        "best": max(closed, key=lambda t: t.pnl) if closed else None,
        "worst": min(closed, key=lambda t: t.pnl) if closed else None,
    }


def build_report(fills: Iterable[ReportFill], *, starting_equity: float | None, start_ms: int | None,
                 end_ms: int | None, equity: list[tuple[int, float]] | None = None, slot: str | None = None,
                 since_ms: int | None = None, until_ms: int | None = None) -> Report:
    """The report of ``fills`` (in the order the ledger recorded them) between ``start_ms`` and
    ``end_ms`` (narrowed to ``since_ms``/``until_ms``). ``equity`` is a sampled equity series (the
    console's); without it the curve is :func:`equity_from_fills` from ``starting_equity``. A
    trade is in the window when it closed in it (an open one: when it opened in it)."""
    fills = [f for f in fills if slot is None or f.slot == slot]
    trades, deltas = _walk(fills)
    times = [f.ts_ms for f in fills] + [t for t, _ in (equity or [])]
    start = start_ms if start_ms is not None else (min(times) if times else None)
    end = end_ms if end_ms is not None else (max(times) if times else None)
    base = starting_equity
    if equity is None and starting_equity is not None:  # from the ledger's start, before any window
        equity = equity_from_fills(fills, starting_equity=starting_equity, start_ms=0)[1:]
    elif equity:
        base = min(equity, key=lambda p: p[0])[1]  # a sampled series starts from its first sample
    if since_ms is not None:
        start = since_ms if start is None else max(start, since_ms)
    if until_ms is not None:
        end = until_ms if end is None else min(end, until_ms)
    equity = sorted(equity or [], key=lambda p: p[0])  # stable: points of one ms keep their order

    def inside(ts: int | None) -> bool:
        return ts is not None and (start is None or ts >= start) and (end is None or ts <= end)

    in_window = [i for i, f in enumerate(fills) if inside(f.ts_ms)]
    listed = [t for t in trades if inside(t.exit_ms if t.exit_ms is not None else t.entry_ms)]
    closed = [t for t in listed if not t.is_open]
    stats = _trade_stats(closed)
    # The equity the window starts from: before anything at its first ms (a fill at the start is in it).
    first_equity = _value_at(equity, start - 1, base) if start is not None else base
    curve = ([(start, first_equity)] if start is not None and first_equity is not None else []) + \
        [(t, v) for t, v in equity if inside(t) and (t, v) != (start, first_equity)]  # no duplicate first point
    final_equity = curve[-1][1] if curve else None
    dd_abs, dd_pct, dd_from, dd_to = _drawdown(curve)
    span_days = (end - start) / DAY_MS if start is not None and end is not None else 0.0
    total_return = final_equity / first_equity - 1.0 if final_equity is not None and first_equity else None
    cagr = None
    if total_return is not None and span_days >= 1 and final_equity > 0:
        try:
            cagr = (final_equity / first_equity) ** (PERIODS_PER_YEAR / span_days) - 1.0
        except OverflowError:
            cagr = None
    daily = (_daily_returns(curve, start, end, first_equity) if curve and first_equity and first_equity > 0
             and end is not None else [])
    sharpe = sortino = None
    if len(daily) >= 2:
        sd = statistics.stdev(daily)
        sharpe = statistics.fmean(daily) / sd * math.sqrt(PERIODS_PER_YEAR) if sd > 0 else None
        downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in daily) / len(daily))
        sortino = statistics.fmean(daily) / downside * math.sqrt(PERIODS_PER_YEAR) if downside > 0 else None
    notional = sum(fills[i].qty * fills[i].price for i in in_window)
    avg_equity = _time_weighted_mean(curve, start, end) if curve else None
    return Report(
        start_ms=start, end_ms=end, starting_equity=first_equity, final_equity=final_equity,
        total_return=total_return, cagr=cagr,
        realized_pnl=sum(deltas[i] for i in in_window), closed_pnl=stats["closed_pnl"],
        fees=sum(fills[i].fee for i in in_window), fills=len(in_window),
        trades=stats["trades"], open_trades=sum(1 for t in listed if t.is_open),
        wins=stats["wins"], draws=stats["draws"], losses=stats["losses"], win_rate=stats["win_rate"],
        avg_pnl=stats["avg_pnl"], avg_return_pct=stats["avg_return_pct"], best=stats["best"],
        worst=stats["worst"], avg_duration_ms=stats["avg_duration_ms"], profit_factor=stats["profit_factor"],
        avg_win=stats["avg_win"], avg_loss=stats["avg_loss"], max_consecutive_wins=stats["max_consecutive_wins"],
        max_consecutive_losses=stats["max_consecutive_losses"],
        trades_per_day=stats["trades"] / span_days if span_days > 0 else None,
        min_equity=min((v for _, v in curve), default=None), max_equity=max((v for _, v in curve), default=None),
        max_drawdown=dd_abs, max_drawdown_pct=dd_pct, drawdown_start_ms=dd_from, drawdown_end_ms=dd_to,
        sharpe=sharpe, sortino=sortino,
        calmar=cagr / dd_pct if cagr is not None and dd_pct > 0 else None, days=len(daily),
        best_day=max(daily, default=None), worst_day=min(daily, default=None),
        winning_days=sum(1 for r in daily if r > 0), draw_days=sum(1 for r in daily if r == 0),
        losing_days=sum(1 for r in daily if r < 0),
        exposure=_exposure(listed, start, end) if start is not None and end is not None else None,
        traded_notional=notional,
        turnover=notional / avg_equity if avg_equity else None,
        per_slot=_per_slot(listed, [fills[i] for i in in_window]),
        trade_list=listed, equity=curve,
    )


def _per_slot(listed: list[Trade], fills: list[ReportFill]) -> list[dict[str, Any]]:
    """freqtrade's per-pair table: one row a slot."""
    rows = []
    for slot in sorted({t.slot for t in listed} | {f.slot for f in fills}):
        mine = [t for t in listed if t.slot == slot]
        closed = [t for t in mine if not t.is_open]
        s = _trade_stats(closed)
        symbols = sorted({t.symbol for t in mine} | {f.symbol for f in fills if f.slot == slot})
        rows.append({
            "slot": slot, "symbol": ", ".join(symbols), "trades": s["trades"], "open_trades": len(mine) - len(closed),
            "wins": s["wins"], "draws": s["draws"], "losses": s["losses"], "win_rate": s["win_rate"],
            "pnl": s["closed_pnl"], "avg_pnl": s["avg_pnl"], "avg_return_pct": s["avg_return_pct"],
            "fees": sum(f.fee for f in fills if f.slot == slot), "avg_duration_ms": s["avg_duration_ms"],
            "best_pnl": s["best"].pnl if s["best"] else None, "worst_pnl": s["worst"].pnl if s["worst"] else None,
        })
    return rows
