"""kernel.report (+ report_source, report_format): the figures of a small hand-built ledger with
known trades and fees. Every reference below is worked out by hand (the cash each fill moved,
the equity after it) or with numpy from those hand values, never from the code's output."""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from kernel.brokers.paper import PaperBroker
from kernel.ledger import CycleRecord, Ledger
from kernel.report import ReportFill, build_report
from kernel.report_format import CSV_COLUMNS, as_csv, as_json, as_text
from kernel.report_source import PAPER_EXCHANGE_FILE, read_state_dir, state_dir_report

H = 3_600_000
D = 24 * H
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SHA1, SHA2 = "a" * 64, "b" * 64

# (slot, symbol, side, qty, price, fee, ts, version that sent the order)
FILLS = [
    ("btc", "BTC/USDT", "buy", 1.0, 100.0, 0.10, T0 + 1 * H, 1),       # trade 1: +10 - 0.21 = +9.79
    ("btc", "BTC/USDT", "sell", 1.0, 110.0, 0.11, T0 + 5 * H, 1),
    ("btc", "BTC/USDT", "buy", 2.0, 105.0, 0.21, T0 + D + 2 * H, 2),   # trade 2: -10 - 0.41 = -10.41
    ("btc", "BTC/USDT", "sell", 2.0, 100.0, 0.20, T0 + D + 6 * H, 2),
    ("eth", "ETH/USDT", "buy", 10.0, 20.0, 0.20, T0 + 2 * D + 1 * H, 1),  # trade 3: 10 + 5 - 0.415 = 14.585
    ("eth", "ETH/USDT", "sell", 5.0, 22.0, 0.11, T0 + 2 * D + 3 * H, 1),
    ("eth", "ETH/USDT", "sell", 5.0, 21.0, 0.105, T0 + 3 * D + 1 * H, 2),
    ("btc", "BTC/USDT", "buy", 0.5, 120.0, 0.06, T0 + 3 * D + 2 * H, 2),  # trade 4: open
]
END = T0 + 3 * D + 12 * H
START_CASH = 10_000.0
# Equity after each fill: cash (every fee paid) + holdings at their symbol's last fill price.
EQUITY = [10_000.0, 9_999.9, 10_009.79, 10_009.58, 9_999.38, 9_999.18, 10_019.07, 10_013.965, 10_013.905]
FINAL = 10_013.905
REALIZED = 9.79 - 10.41 + 14.585 - 0.06  # closed trades + the open one's entry fee
FEES = 0.10 + 0.11 + 0.21 + 0.20 + 0.20 + 0.11 + 0.105 + 0.06
NOTIONAL = 100 + 110 + 210 + 200 + 200 + 110 + 105 + 60


def write_ledger(state_dir, fills=FILLS, *, cash: float | None = START_CASH, clock_ms: int = END):
    if cash is not None:
        PaperBroker(state_dir / PAPER_EXCHANGE_FILE, cash=cash).close()
    ledger = Ledger(state_dir / "ledger.sqlite3")
    candles = set()
    for i, (slot, symbol, side, qty, price, fee, ts, version) in enumerate(fills):
        candle = ts - ts % H
        cid = f"o{i}"
        ledger.record_intent(client_order_id=cid, slot=slot, symbol=symbol, candle_ms=candle,
                             intent="entry" if side == "buy" else "exit", side=side, qty=qty, ref_price=price)
        ledger.record_fill(fill_id=f"f{i}", client_order_id=cid, qty=qty, price=price, fee=fee, ts_ms=ts)
        candles.add((slot, candle, version))
    ledger.record_cycles([CycleRecord(slot=s, candle_ms=c, strategy="x", version=v, sha256=SHA1 if v == 1 else SHA2,
                                      started_ms=c, lag_ms=0, lock_wait_us=0, duration_us=0, result="enter",
                                      reason=None) for s, c, v in sorted(candles)]
                         + [CycleRecord(slot="btc", candle_ms=T0, strategy="x", version=1, sha256=SHA1,
                                        started_ms=T0, lag_ms=0, lock_wait_us=0, duration_us=0, result="hold",
                                        reason=None)])
    ledger.meta_set(clock_ms=clock_ms)
    summary = ledger.summary()
    ledger.close()
    return summary


def test_the_figures_of_a_hand_built_ledger(tmp_path):
    summary = write_ledger(tmp_path)
    r = state_dir_report(tmp_path)
    assert (r.start_ms, r.end_ms) == (T0, END)
    assert r.starting_equity == START_CASH  # the paper exchange's initial cash
    assert r.final_equity == pytest.approx(FINAL)
    assert [v for _, v in r.equity] == pytest.approx(EQUITY)
    assert r.total_return == pytest.approx(FINAL / START_CASH - 1)
    # The ledger's own totals, to the cent: one definition of a round trip.
    assert r.realized_pnl == pytest.approx(REALIZED) == pytest.approx(summary["realized_pnl"])
    assert (r.trades, r.wins) == (3, 2) == (summary["trades"], summary["wins"])
    assert (r.draws, r.losses, r.open_trades) == (0, 1, 1)
    assert r.closed_pnl == pytest.approx(9.79 - 10.41 + 14.585)
    assert r.fees == pytest.approx(FEES) == pytest.approx(summary["fees"])
    assert r.win_rate == pytest.approx(2 / 3)
    assert r.best.pnl == pytest.approx(14.585) and r.best.slot == "eth"
    assert r.worst.pnl == pytest.approx(-10.41)
    assert r.avg_duration_ms == pytest.approx((4 * H + 4 * H + 24 * H) / 3)
    assert r.profit_factor == pytest.approx((9.79 + 14.585) / 10.41)
    assert (r.avg_win, r.avg_loss) == (pytest.approx((9.79 + 14.585) / 2), pytest.approx(-10.41))
    assert (r.max_consecutive_wins, r.max_consecutive_losses) == (1, 1)  # +, -, + in the order they closed
    assert r.trades_per_day == pytest.approx(3 / 3.5)
    assert (r.min_equity, r.max_equity) == (pytest.approx(9_999.18), pytest.approx(10_019.07))
    # Max drawdown: from the peak after trade 1 (10009.79) to the eth entry (9999.18).
    assert r.max_drawdown == pytest.approx(10.61)
    assert r.max_drawdown_pct == pytest.approx(10.61 / 10_009.79)
    assert (r.drawdown_start_ms, r.drawdown_end_ms) == (T0 + 5 * H, T0 + 2 * D + 1 * H)
    # Per-day returns, end of each UTC day (the last day ends at the span's end).
    ends = np.array([START_CASH, 10_009.79, 9_999.38, 10_019.07, FINAL])
    daily = ends[1:] / ends[:-1] - 1
    assert r.days == 4
    assert (r.best_day, r.worst_day) == (pytest.approx(daily.max()), pytest.approx(daily.min()))
    assert (r.winning_days, r.draw_days, r.losing_days) == (2, 0, 2)
    assert r.sharpe == pytest.approx(daily.mean() / daily.std(ddof=1) * math.sqrt(365))
    assert r.sortino == pytest.approx(daily.mean() / np.sqrt(np.mean(np.minimum(daily, 0) ** 2)) * math.sqrt(365))
    cagr = (FINAL / START_CASH) ** (365 / 3.5) - 1
    assert r.cagr == pytest.approx(cagr)
    assert r.calmar == pytest.approx(cagr / (10.61 / 10_009.79))
    # In market 4 h + 4 h + 24 h + 10 h (the open trade, to the end) of 84 h.
    assert r.exposure == pytest.approx(42 / 84)
    assert r.traded_notional == pytest.approx(NOTIONAL)
    times = np.array([T0] + [f[6] for f in FILLS] + [END], dtype=float)
    weighted = np.sum(np.array(EQUITY) * np.diff(times)) / (END - T0)
    assert r.turnover == pytest.approx(NOTIONAL / weighted)


def test_the_trade_list_and_who_opened_each_trade(tmp_path):
    write_ledger(tmp_path)
    r = state_dir_report(tmp_path)
    rows = [(t.slot, t.entry_ms, t.exit_ms, t.entry_price, t.exit_price, t.qty, t.fees, t.pnl, t.version, t.sha256)
            for t in r.trade_list]
    assert rows == [
        ("btc", T0 + H, T0 + 5 * H, 100.0, 110.0, 1.0, pytest.approx(0.21), pytest.approx(9.79), 1, SHA1),
        ("btc", T0 + D + 2 * H, T0 + D + 6 * H, 105.0, 100.0, 2.0, pytest.approx(0.41), pytest.approx(-10.41), 2, SHA2),
        ("eth", T0 + 2 * D + H, T0 + 3 * D + H, 20.0, 21.5, 10.0, pytest.approx(0.415), pytest.approx(14.585), 1, SHA1),
        ("btc", T0 + 3 * D + 2 * H, None, 120.0, None, 0.5, pytest.approx(0.06), None, 2, SHA2),
    ]
    assert r.trade_list[0].return_pct == pytest.approx(9.79 / 100)
    by_slot = {s["slot"]: s for s in r.per_slot}
    assert by_slot["btc"]["trades"] == 2 and by_slot["btc"]["open_trades"] == 1
    assert by_slot["btc"]["pnl"] == pytest.approx(9.79 - 10.41)
    assert by_slot["btc"]["fees"] == pytest.approx(0.10 + 0.11 + 0.21 + 0.20 + 0.06)
    assert (by_slot["eth"]["wins"], by_slot["eth"]["losses"], by_slot["eth"]["pnl"]) == (1, 0, pytest.approx(14.585))


def test_text_json_and_csv(tmp_path):
    write_ledger(tmp_path)
    r = state_dir_report(tmp_path)
    text = as_text(r)
    assert "SUMMARY METRICS" in text and "PER-SLOT RESULTS" in text and "TRADES" in text
    assert "14.5850" in text and "v2 bbbbbbbbbbbb" in text and "open" in text
    data = json.loads(as_json(r))
    assert data["trades"] == 3 and data["start_at"] == "2026-01-01T00:00:00Z"
    assert data["trade_list"][2]["exit_at"] == "2026-01-04T01:00:00Z"
    rows = list(csv.DictReader(io.StringIO(as_csv(r))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [float(x["pnl"]) for x in rows[:3]] == pytest.approx([9.79, -10.41, 14.585])
    assert rows[3]["open"] == "1" and rows[3]["exit_at"] == "" and rows[3]["pnl"] == ""
    assert rows[1]["sha256"] == SHA2 and rows[1]["version"] == "2"


def test_a_window_and_a_slot(tmp_path):
    write_ledger(tmp_path)
    day1 = state_dir_report(tmp_path, since_ms=T0 + D, until_ms=T0 + 2 * D - 1)
    assert [t.pnl for t in day1.trade_list] == pytest.approx([-10.41])
    assert day1.starting_equity == pytest.approx(10_009.79)
    assert day1.final_equity == pytest.approx(9_999.38)
    assert day1.realized_pnl == pytest.approx(-10.41) and day1.fees == pytest.approx(0.41)
    eth = state_dir_report(tmp_path, slot="eth")
    assert (eth.trades, eth.open_trades) == (1, 0)
    assert eth.realized_pnl == pytest.approx(14.585)
    assert eth.final_equity == pytest.approx(START_CASH + 14.585)


def test_a_round_trip_the_ledger_closed_on_dust(tmp_path):
    """The report follows the ledger's dust decision: 0.0005 left below the minimum closes the trade."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.dust_rule = lambda symbol, price: 0.001
    for cid, side, qty, price in (("o1", "buy", 1.0, 100.0), ("o2", "sell", 0.9995, 110.0), ("o3", "buy", 1.0, 90.0)):
        ledger.record_intent(client_order_id=cid, slot="s", symbol="BTC/USDT", candle_ms=T0, intent="entry",
                             side=side, qty=qty, ref_price=price)
        ledger.record_fill(fill_id=cid, client_order_id=cid, qty=qty, price=price, fee=0.0, ts_ms=T0 + len(cid))
        ledger.settle_round_trip(cid)
    summary = ledger.summary()
    ledger.close()
    r = state_dir_report(tmp_path)
    assert summary["trades"] == r.trades == 1
    closed, opened = r.trade_list
    assert closed.pnl == pytest.approx(0.9995 * 10)
    assert opened.is_open and opened.entry_price == 90.0  # the dust's cost is not blended in
    assert r.realized_pnl == pytest.approx(summary["realized_pnl"])
    assert r.starting_equity is None and r.total_return is None  # no paper exchange, no status.json


def test_empty_ledger_one_open_trade_and_no_exits(tmp_path):
    (tmp_path / "empty").mkdir()
    write_ledger(tmp_path / "empty", fills=[])
    r = state_dir_report(tmp_path / "empty")
    assert (r.trades, r.fills, r.win_rate, r.sharpe, r.best) == (0, 0, None, None, None)
    assert "No fills" in as_text(r) and json.loads(as_json(r))["trade_list"] == []
    assert as_csv(r).strip() == ",".join(CSV_COLUMNS)
    (tmp_path / "open").mkdir()
    write_ledger(tmp_path / "open", fills=FILLS[:1], clock_ms=T0 + 3 * H)
    r = state_dir_report(tmp_path / "open")
    assert (r.trades, r.open_trades, r.win_rate, r.avg_duration_ms) == (0, 1, None, None)
    assert r.realized_pnl == pytest.approx(-0.10) and r.final_equity == pytest.approx(9_999.9)
    assert r.exposure == pytest.approx(2 / 3)  # open from 1 h to the end at 3 h
    assert r.cagr is None and r.sharpe is None  # under a day: no annualised figure
    assert "open" in as_text(r)
    with pytest.raises(FileNotFoundError):
        read_state_dir(tmp_path / "nothing")


def test_a_sampled_equity_series_is_used_as_given():
    fills = [ReportFill(slot="s", symbol="X/USDT", side=side, qty=1.0, price=p, fee=0.0, ts_ms=ts)
             for side, p, ts in (("buy", 10.0, 2 * H), ("sell", 12.0, 4 * H))]
    equity = [(0, 100.0), (3 * H, 90.0), (4 * H, 102.0)]
    r = build_report(fills, starting_equity=None, start_ms=0, end_ms=4 * H, equity=equity)
    assert (r.starting_equity, r.final_equity) == (100.0, 102.0)
    assert r.max_drawdown == pytest.approx(10.0) and r.max_drawdown_pct == pytest.approx(0.1)
    assert r.closed_pnl == pytest.approx(2.0)


def test_streaks_follow_the_order_trades_closed_in():
    # Round trips of 1 unit bought at 10 (no fees), sold at these prices: + + - + - - (then a draw).
    exits = [11.0, 12.0, 9.0, 10.5, 9.5, 8.0, 10.0]
    fills = []
    for i, price in enumerate(exits):
        fills.append(ReportFill(slot="s", symbol="X/USDT", side="buy", qty=1.0, price=10.0, fee=0.0, ts_ms=2 * i * H))
        fills.append(ReportFill(slot="s", symbol="X/USDT", side="sell", qty=1.0, price=price, fee=0.0,
                                ts_ms=(2 * i + 1) * H))
    r = build_report(fills, starting_equity=100.0, start_ms=0, end_ms=14 * H)
    assert (r.wins, r.losses, r.draws) == (3, 3, 1)
    assert (r.max_consecutive_wins, r.max_consecutive_losses) == (2, 2)
    assert r.avg_win == pytest.approx((1 + 2 + 0.5) / 3) and r.avg_loss == pytest.approx(-(1 + 0.5 + 2) / 3)
    assert r.exposure == pytest.approx(7 / 14)
