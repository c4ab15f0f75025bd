"""kernel.round_trips: one definition of a round trip and its P&L (entry and exit fees), the
same in the ledger, status.json and kernelctl. Reference figures are worked out by hand
below, as the cash a round trip cost or made."""
from __future__ import annotations

import pytest

from kernel.ledger import Ledger
from kernel.round_trips import Book, apply_fill, replay, settle

# Round trip 1: a loss once both fees are counted, although its first sell made money.
#   cash: -100 - 0.1 (buy) + 55 - 0.055 (sell) + 45 - 0.045 (sell) = -0.2
# Round trip 2: cash -100 - 0.1 + 110 - 0.11 = +9.79.
SCRIPT = [
    ("buy", 1.0, 100.0, 0.1),
    ("sell", 0.5, 110.0, 0.055),
    ("sell", 0.5, 90.0, 0.045),
    ("buy", 2.0, 50.0, 0.1),
    ("sell", 2.0, 55.0, 0.11),
]
ROUND_TRIPS = [-0.2, 9.79]
# Each sell's own P&L (what the console summed): 0.5 x 10 - 0.055, 0.5 x -10 - 0.045, 2 x 5 - 0.11.
SELL_PNLS = [4.945, -5.045, 9.89]

# With a market minimum of 0.05: buy 1 @ 10 (fee 0.01), sell 0.99 @ 12 (fee 0.01188) leaves 0.01,
# unsellable dust. The round trip is closed: 0.99 x (12 - 10) - 0.01188 - 0.01 = 1.95812, and the
# dust (0.01 at a cost of 0.1) is apart. The next entry, 1 @ 20, has an entry price of exactly 20.
DUST_SCRIPT = [("buy", 1.0, 10.0, 0.01), ("sell", 0.99, 12.0, 0.01188)]


def fills(script):
    return [{"side": s, "qty": q, "price": p, "fee": f} for s, q, p, f in script]


def test_a_round_trip_counts_its_entry_and_exit_fees():
    book, rounds = replay(fills(SCRIPT))
    assert rounds == pytest.approx(ROUND_TRIPS)
    assert (book.trades, book.wins, book.qty) == (2, 1, 0.0)
    assert book.realized_pnl == pytest.approx(sum(ROUND_TRIPS))
    assert book.fees == pytest.approx(0.1 + 0.055 + 0.045 + 0.1 + 0.11)
    # Summing the sells' own P&L leaves the entry fees out: the console's old figure.
    assert sum(SELL_PNLS) == pytest.approx(sum(ROUND_TRIPS) + 0.1 + 0.1)


def test_an_open_round_trip_carries_its_entry_fee_and_is_not_a_trade_yet():
    book, pnl, rt = apply_fill(Book(), side="buy", qty=1.0, price=100.0, fee=0.1)
    assert (pnl, rt, book.trades) == (None, None, 0)
    assert book.realized_pnl == pytest.approx(-0.1) and book.cost == 100.0


def test_a_remainder_below_the_minimum_is_dust_closes_the_round_trip_and_stays_out_of_the_next_average():
    book, rounds = replay(fills(DUST_SCRIPT), dust=0.05)
    assert rounds == pytest.approx([1.95812])
    assert (book.qty, book.trades, book.wins) == (0.0, 1, 1)
    assert book.dust_qty == pytest.approx(0.01) and book.dust_cost == pytest.approx(0.1)
    book, _, _ = apply_fill(book, side="buy", qty=1.0, price=20.0, fee=0.02)
    assert book.cost / book.qty == 20.0 and book.dust_qty == pytest.approx(0.01)
    # Without a dust rule the remainder is a position and the round trip stays open.
    open_book, rounds = replay(fills(DUST_SCRIPT))
    assert rounds == [] and open_book.qty == pytest.approx(0.01) and open_book.trades == 0
    assert settle(open_book, 0.0) == (open_book, None)


def _book(ledger: Ledger, slot: str, script, *, settle_each_sell: bool = False, start: int = 0) -> None:
    for i, (side, qty, price, fee) in enumerate(script, start):
        cid = f"{slot}-{i}"
        ledger.record_intent(client_order_id=cid, slot=slot, symbol="BTC/USDT", candle_ms=i, intent="x",
                             side=side, qty=qty, ref_price=price)
        ledger.record_fill(fill_id=f"F-{cid}", client_order_id=cid, qty=qty, price=price, fee=fee, ts_ms=i)
        if settle_each_sell:
            ledger.settle_round_trip(cid)


def test_the_ledger_books_round_trips_and_dust_the_same_way(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        _book(ledger, "a", SCRIPT)
        ledger.dust_rule = lambda symbol, price: 0.05
        _book(ledger, "b", DUST_SCRIPT, settle_each_sell=True)
        a, b = ledger.position("a"), ledger.position("b")
        assert (a.trades, a.wins) == (2, 1) and a.realized_pnl == pytest.approx(sum(ROUND_TRIPS))
        assert [f["pnl"] for f in ledger.fills("a") if f["side"] == "sell"] == pytest.approx(SELL_PNLS)
        closing = [f["round_trip_pnl"] for f in ledger.fills("a") if f["round_trip_pnl"] is not None]
        assert closing == pytest.approx(ROUND_TRIPS)
        assert (b.qty, b.entry_price, b.trades, b.wins) == (0.0, None, 1, 1)
        assert b.dust_qty == pytest.approx(0.01) and b.realized_pnl == pytest.approx(1.95812)
        summary = ledger.summary()
        assert (summary["trades"], summary["wins"]) == (3, 2)
        assert summary["realized_pnl"] == pytest.approx(sum(ROUND_TRIPS) + 1.95812)
        ledger.settle_round_trip("b-1")  # settling again closes nothing twice
        assert ledger.position("b").trades == 1
        _book(ledger, "b", [("buy", 1.0, 20.0, 0.02)], start=2)
        assert ledger.position("b").entry_price == 20.0
    finally:
        ledger.close()


def test_status_json_reports_the_ledger_round_trips_per_slot_and_in_total(driver):
    driver.add_slot("btc-5m", "tagged")
    _book(driver.kernel.ledger, "btc-5m", SCRIPT)
    snap = driver.kernel.snapshot()
    [slot] = snap["slots"]
    assert (slot["position"]["trades"], slot["position"]["wins"]) == (2, 1)
    assert slot["position"]["realized_pnl"] == pytest.approx(sum(ROUND_TRIPS))
    assert slot["dust_qty"] == 0.0 and slot["unsellable"] is None
    assert (snap["ledger"]["trades"], snap["ledger"]["wins"]) == (2, 1)
    assert snap["ledger"]["realized_pnl"] == pytest.approx(sum(ROUND_TRIPS))
    closing = [f["round_trip_pnl"] for f in snap["fills"] if f["round_trip_pnl"] is not None]
    assert closing == pytest.approx(ROUND_TRIPS)
    assert driver.kernel.ledger.mark_unsellable("btc-5m", "position 0.06 cannot be sold: value 3 below 5")
    assert driver.slot("btc-5m")["unsellable"] == "position 0.06 cannot be sold: value 3 below 5"


def test_an_old_ledger_is_migrated_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "ledger.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE fills (fill_id TEXT PRIMARY KEY, client_order_id TEXT NOT NULL, slot TEXT NOT NULL,
            side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL, ts_ms INTEGER NOT NULL,
            pnl REAL, seq INTEGER);
        CREATE TABLE positions (slot TEXT PRIMARY KEY, symbol TEXT NOT NULL, qty REAL NOT NULL DEFAULT 0,
            cost REAL NOT NULL DEFAULT 0, realized_pnl REAL NOT NULL DEFAULT 0, fees REAL NOT NULL DEFAULT 0,
            trades INTEGER NOT NULL DEFAULT 0, wins INTEGER NOT NULL DEFAULT 0,
            round_start_pnl REAL NOT NULL DEFAULT 0);
        INSERT INTO positions(slot, symbol, qty, cost, realized_pnl, trades) VALUES('old', 'BTC/USDT', 0, 0, 5.0, 2);
        INSERT INTO fills VALUES('f1', 'c1', 'old', 'sell', 1, 10, 0.01, 1, 5.0, 1);
    """)
    old.commit()
    old.close()
    ledger = Ledger(path)
    try:
        assert ledger.meta_get("schema_version") == 2
        p = ledger.position("old")
        assert (p.trades, p.realized_pnl, p.dust_qty, p.unsellable) == (2, 5.0, 0.0, None)
        [f] = ledger.fills()
        assert f["pnl"] == 5.0 and f["round_trip_pnl"] is None and f["fee_currency"] is None
        assert ledger.summary()["trades_pending"] == 0
    finally:
        ledger.close()
    Ledger(path).close()  # and again: nothing left to do
