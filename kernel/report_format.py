"""A :class:`kernel.report.Report` as text (freqtrade-like tables), JSON, or CSV of its trades."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from typing import Any

from .report import Report, Trade

__all__ = ["as_text", "as_json", "as_dict", "as_csv", "CSV_COLUMNS", "iso", "duration", "pct", "num", "summary_rows"]

CSV_COLUMNS = ("slot", "symbol", "entry_at", "entry_price", "exit_at", "exit_price", "qty", "fees", "pnl",
               "return_pct", "duration_s", "version", "sha256", "open")


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    s = int(round(ms / 1000))
    d, s = divmod(s, 86_400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x * 100:.{digits}f}%"


def num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _price(x: float | None) -> str:
    return "-" if x is None else f"{x:.8g}"


def _version(t: Trade) -> str:
    if t.version is None and not t.sha256:
        return "-"
    return f"v{t.version if t.version is not None else '?'} {(t.sha256 or '')[:12]}".strip()


def as_dict(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data: every time in ms and as ISO 8601 (``*_at``)."""
    d = report.to_dict()
    for key in ("start", "end", "drawdown_start", "drawdown_end"):
        d[f"{key}_at"] = iso(d[f"{key}_ms"])
    for t in [*d["trade_list"], d["best"], d["worst"]]:
        if t is not None:
            t["entry_at"], t["exit_at"] = iso(t["entry_ms"]), iso(t["exit_ms"])
    return d


def as_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2)


def as_csv(report: Report) -> str:
    """One row a trade (open ones too, with no exit), oldest first."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for t in report.trade_list:
        w.writerow([t.slot, t.symbol, iso(t.entry_ms), repr(t.entry_price), iso(t.exit_ms) or "",
                    "" if t.exit_price is None else repr(t.exit_price), repr(t.qty), repr(t.fees),
                    "" if t.pnl is None else repr(t.pnl), "" if t.return_pct is None else repr(t.return_pct),
                    "" if t.exit_ms is None else (t.exit_ms - t.entry_ms) / 1000,
                    "" if t.version is None else t.version, t.sha256 or "", int(t.is_open)])
    return buf.getvalue()


def _table(title: str, header: list[str], rows: list[list[str]], *, left: int = 2) -> list[str]:
    """A boxed table; its first ``left`` columns (names) flush left, the figures flush right."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    return [title, line, fmt(header), line, *(fmt(r) for r in rows), line, ""]


def summary_rows(r: Report) -> list[tuple[str, str]]:
    """The summary metrics, label and value, as the text report and the console page show them."""
    def trade(t: Trade | None) -> str:
        return "-" if t is None else f"{t.slot} {num(t.pnl)} ({pct(t.return_pct)})"

    return [
        ("From", iso(r.start_ms) or "-"), ("To", iso(r.end_ms) or "-"),
        ("Starting equity", num(r.starting_equity)), ("Final equity", num(r.final_equity)),
        ("Total return", pct(r.total_return)), ("CAGR", pct(r.cagr)),
        ("Realised P&L (fees included)", num(r.realized_pnl)), ("Closed trades' P&L", num(r.closed_pnl)),
        ("Fees paid", num(r.fees)),
        ("Trades (closed) / open", f"{r.trades} / {r.open_trades}"),
        ("Win / draw / loss", f"{r.wins} / {r.draws} / {r.losses}"), ("Win rate", pct(r.win_rate)),
        ("Avg trade P&L", num(r.avg_pnl)), ("Avg trade return", pct(r.avg_return_pct)),
        ("Best trade", trade(r.best)), ("Worst trade", trade(r.worst)),
        ("Avg win / avg loss", f"{num(r.avg_win)} / {num(r.avg_loss)}"),
        ("Max consecutive wins / losses", f"{r.max_consecutive_wins} / {r.max_consecutive_losses}"),
        ("Profit factor", num(r.profit_factor)), ("Avg duration", duration(r.avg_duration_ms)),
        ("Trades per day", num(r.trades_per_day)),
        ("Min / max equity", f"{num(r.min_equity)} / {num(r.max_equity)}"),
        ("Max drawdown", f"{num(r.max_drawdown)} ({pct(r.max_drawdown_pct)})"),
        ("Drawdown peak / trough", f"{iso(r.drawdown_start_ms) or '-'} / {iso(r.drawdown_end_ms) or '-'}"),
        ("Sharpe (daily, x sqrt 365)", num(r.sharpe)), ("Sortino (daily, x sqrt 365)", num(r.sortino)),
        ("Calmar (CAGR / max DD)", num(r.calmar)), ("Days in returns", str(r.days)),
        ("Best day / worst day", f"{pct(r.best_day)} / {pct(r.worst_day)}"),
        ("Days win / draw / lose", f"{r.winning_days} / {r.draw_days} / {r.losing_days}"),
        ("Exposure (time in market)", pct(r.exposure)),
        ("Traded notional", num(r.traded_notional)), ("Turnover (notional / avg equity)", num(r.turnover)),
        ("Fills", str(r.fills)),
    ]


def as_text(report: Report) -> str:
    r = report
    out = _table("SUMMARY METRICS", ["Metric", "Value"], [list(row) for row in summary_rows(r)])
    if not r.fills and not r.trade_list:
        out.append("No fills in this ledger (or window): no trades to report.")
        return "\n".join(out) + "\n"
    out += _table("PER-SLOT RESULTS", ["Slot", "Symbol", "Trades", "Open", "Win/Draw/Loss", "Win %", "P&L",
                                       "Avg P&L", "Avg %", "Fees", "Avg duration", "Best", "Worst"],
                  [[s["slot"], s["symbol"], str(s["trades"]), str(s["open_trades"]),
                    f"{s['wins']}/{s['draws']}/{s['losses']}", pct(s["win_rate"]), num(s["pnl"]), num(s["avg_pnl"]),
                    pct(s["avg_return_pct"]), num(s["fees"]), duration(s["avg_duration_ms"]),
                    num(s["best_pnl"]), num(s["worst_pnl"])] for s in r.per_slot])
    if not r.trade_list:
        out.append("No round trip in this window (fills without a buy that opened one).")
        return "\n".join(out) + "\n"
    out += _table("TRADES", ["Slot", "Symbol", "Entry", "Entry price", "Exit", "Exit price", "Qty", "Fees",
                             "P&L", "Return", "Duration", "Opened by"],
                  [[t.slot, t.symbol, iso(t.entry_ms) or "-", _price(t.entry_price),
                    iso(t.exit_ms) or "open", _price(t.exit_price), f"{t.qty:.8g}", num(t.fees, 4),
                    "open" if t.pnl is None else num(t.pnl, 4), pct(t.return_pct),
                    duration(None if t.exit_ms is None else t.exit_ms - t.entry_ms), _version(t)]
                   for t in r.trade_list])
    return "\n".join(out)
