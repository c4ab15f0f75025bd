"""The order path's per-order lookups are index searches, not scans of every order (kernel/ledger_order_indexes.py)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from kernel.intent_batch import Intent, IntentBatch
from kernel.ledger import Ledger

T0 = 1_700_000_000_000


def test_trades_pending_reads_its_partial_index_and_finds_exactly_the_flagged_orders(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        batch = IntentBatch(ledger)
        for i in range(50):
            batch.record(Intent(client_order_id=f"fs{i:032x}", slot=f"s{i % 5}", symbol="BTC/USDT", candle_ms=T0 + i,
                                intent="entry", side="buy", qty=1.0, ref_price=100.0))
        for i in (7, 31):
            ledger.mark_order(f"fs{i:032x}", "filled", trades_pending=True)
        statements: list[str] = []
        ledger._db.set_trace_callback(statements.append)
        pending = ledger.trades_pending()
        ledger._db.set_trace_callback(None)
        assert [r["client_order_id"] for r in pending] == [f"fs{7:032x}", f"fs{31:032x}"]
        (sql,) = statements
        with sqlite3.connect(ledger.path) as other:
            plan = " ".join(r[3] for r in other.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING INDEX orders_trades_pending" in plan, plan
    finally:
        ledger.close()
