"""Reading a kernel's SQLite files from outside: the ledger, the paper exchange's book, or any
other SQLite file a test inspects (the console's database).

Read-only connections (``mode=ro``): a test or a benchmark looks, it never writes, and closing
its connection must not checkpoint the kernel's WAL behind its back. Readers never block the
kernel's writer in WAL mode, so this is safe while the kernel runs.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from kernel.ledger import LEDGER_FILE

PAPER_EXCHANGE_FILE = "paper-exchange.sqlite3"


def sqlite_rows(path: Path, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts; none while the file or the table does not exist yet."""
    path = Path(path)
    if not path.exists():
        return []
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args).fetchall()]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        con.close()


def ledger_rows(state_dir: Path, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
    return sqlite_rows(Path(state_dir) / LEDGER_FILE, sql, args)


def ledger_meta(state_dir: Path, key: str) -> str | None:
    """A value of the ledger's ``meta`` table (the stored clock, the halt...), as stored."""
    rows = ledger_rows(state_dir, "SELECT value FROM meta WHERE key=?", (key,))
    return rows[0]["value"] if rows else None


def ledger_halt(state_dir: Path) -> dict:
    """The halt the kernel last recorded (``meta`` key ``halt``: reason, since, observed_ns...)."""
    value = ledger_meta(state_dir, "halt")
    return json.loads(value) if value else {}


def ledger_command(state_dir: Path, command_id: str) -> dict | None:
    """A command's result as the ledger keeps it (``detail`` decoded), for results older than
    what status.json still lists."""
    rows = ledger_rows(state_dir, "SELECT * FROM commands WHERE id=?", (command_id,))
    if not rows:
        return None
    row = rows[0]
    row["detail"] = json.loads(row["detail"]) if row["detail"] else None
    return row


def ledger_positions(ledger: Path) -> dict[str, float]:
    """Each slot's position quantity, as the ledger holds it."""
    return {r["slot"]: r["qty"] for r in sqlite_rows(ledger, "SELECT slot, qty FROM positions")}


def net_fills(ledger: Path) -> dict[str, float]:
    """Each slot's bought minus sold quantity, summed from its fills."""
    out: dict[str, float] = {}
    for f in sqlite_rows(ledger, "SELECT slot, side, qty FROM fills"):
        out[f["slot"]] = out.get(f["slot"], 0.0) + (f["qty"] if f["side"] == "buy" else -f["qty"])
    return out
