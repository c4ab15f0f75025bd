"""What a report is made of, read from a kernel's state dir without writing anything: the ledger
opened read-only (works beside a running kernel, and on a finished replay's dir).

Each fill is joined with its order (symbol, candle) and that candle's cycle (the strategy
version and sha256 that sent the order: the ``cycles`` table records them since the releases
work). The starting equity is the paper exchange's initial cash when the state dir has one,
else what status.json implies (equity - realised - unrealised P&L), else unknown (the report
then gives absolute figures only).
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .control import STATUS_FILE, ControlError, read_status
from .ledger import LEDGER_FILE
from .report import Report, ReportFill, build_report
from .report_format import as_csv, as_json, as_text

__all__ = ["LedgerInputs", "read_state_dir", "state_dir_report", "render", "parse_time", "FORMATS",
           "PAPER_EXCHANGE_FILE"]

PAPER_EXCHANGE_FILE = "paper-exchange.sqlite3"  # kernel/venues.py puts the paper broker's exchange here


@dataclass(slots=True)
class LedgerInputs:
    fills: list[ReportFill]
    starting_equity: float | None
    start_ms: int | None  # the first candle a cycle ran for (or the first fill)
    end_ms: int | None  # the kernel's clock when it last reported (a replay's simulated end)


# Each fill with its order's symbol and the version of the cycle that sent the order, in the
# order the ledger booked them (seq): the order kernel.round_trips moved the book in.
_FILLS_SQL = """
SELECT f.fill_id, f.slot, f.side, f.qty, f.price, f.fee, f.ts_ms, f.round_trip_pnl, o.symbol, c.version, c.sha256
FROM fills f LEFT JOIN orders o ON o.client_order_id = f.client_order_id
LEFT JOIN cycles c ON c.slot = o.slot AND c.candle_ms = o.candle_ms
ORDER BY COALESCE(f.seq, 0), f.ts_ms, f.fill_id
"""


def read_state_dir(state_dir: Path) -> LedgerInputs:
    """The report's inputs from ``state_dir``; FileNotFoundError when it holds no ledger.

    One read transaction on a read-only connection (as ``Ledger(read_only=True)`` opens it), so
    that a running kernel's fills, cycles and clock are read as of one moment; one join, not
    every cycle of a long ledger."""
    path = Path(state_dir) / LEDGER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no ledger in {state_dir}")
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=5.0)
    try:
        db.row_factory = sqlite3.Row
        db.execute("BEGIN")
        columns = {r[1] for r in db.execute("PRAGMA table_info(fills)")}
        # A ledger from before schema 2 (not migrated yet: a reader never migrates) has no round_trip_pnl.
        sql = _FILLS_SQL if "round_trip_pnl" in columns else _FILLS_SQL.replace("f.round_trip_pnl", "NULL AS round_trip_pnl")
        rows = db.execute(sql).fetchall()
        first_cycle = db.execute("SELECT MIN(candle_ms) FROM cycles").fetchone()[0]
        clock = db.execute("SELECT value FROM meta WHERE key='clock_ms'").fetchone()
        db.execute("COMMIT")
    finally:
        db.close()
    fills = [ReportFill(slot=r["slot"], symbol=r["symbol"] or "?", side=r["side"], qty=r["qty"], price=r["price"],
                        fee=r["fee"], ts_ms=r["ts_ms"], version=r["version"], sha256=r["sha256"],
                        closes=r["round_trip_pnl"] is not None, fill_id=r["fill_id"]) for r in rows]
    clock_ms = json.loads(clock[0]) if clock else None
    starts = [t for t in (first_cycle, min((f.ts_ms for f in fills), default=None)) if t is not None]
    ends = [t for t in (clock_ms, max((f.ts_ms for f in fills), default=None)) if t is not None]
    return LedgerInputs(fills=fills, starting_equity=_starting_equity(Path(state_dir)),
                        start_ms=min(starts) if starts else None, end_ms=max(ends) if ends else None)


def _starting_equity(state_dir: Path) -> float | None:
    paper = state_dir / PAPER_EXCHANGE_FILE
    if paper.is_file():
        try:
            db = sqlite3.connect(f"{paper.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
            try:
                row = db.execute("SELECT value FROM meta WHERE key='initial_cash'").fetchone()
            finally:
                db.close()
            if row is not None:
                return float(row[0])
        except (sqlite3.Error, ValueError):
            pass
    try:
        st = read_status(state_dir / STATUS_FILE)
    except (ControlError, OSError):
        return None
    if st is None or st.ledger.equity is None:
        return None
    # equity = start + realised (all fees) + unrealised: the start is what is left.
    return st.ledger.equity - st.ledger.realized_pnl - (st.ledger.unrealized_pnl or 0.0)


def state_dir_report(state_dir: Path, *, slot: str | None = None, since_ms: int | None = None,
                     until_ms: int | None = None) -> Report:
    """The report of the ledger in ``state_dir`` (kernelctl report)."""
    src = read_state_dir(state_dir)
    return build_report(src.fills, starting_equity=src.starting_equity, start_ms=src.start_ms, end_ms=src.end_ms,
                        slot=slot, since_ms=since_ms, until_ms=until_ms)


FORMATS = {"text": as_text, "json": as_json, "csv": as_csv}


def parse_time(text: str | None) -> int | None:
    """``2026-01-02`` or ``2026-01-02T03:04[:05][Z|+hh:mm]`` (UTC when no offset) as epoch ms."""
    if text is None or not text.strip():
        return None
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date or time: {text!r} (e.g. 2026-01-02 or 2026-01-02T03:04Z)") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return int(at.timestamp() * 1000)


def render(state_dir: Path, *, fmt: str = "text", slot: str | None = None, since: str | None = None,
           until: str | None = None) -> str:
    """``kernelctl report``: the report of a state dir's ledger as text, JSON or a CSV of its trades.
    ValueError for a bad format or time, FileNotFoundError when there is no ledger."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    report = state_dir_report(state_dir, slot=slot, since_ms=parse_time(since), until_ms=parse_time(until))
    return FORMATS[fmt](report)
