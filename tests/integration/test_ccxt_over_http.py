"""``runkernel --feed ccxt --broker ccxt --exchange binance --exchange-url http://127.0.0.1:PORT``
against a fake Binance spot exchange on a real loopback socket (tests/support/fake_binance.py):
ccxt's own HTTP stack, signing, parsing and error mapping, the kernel's own processes.

One story, three kernel processes on one state dir and one exchange:

1. the entry meets a 429 first (retried), fills; the exit fills only 60 % (the market order
   expires), the next cycle sells the rest; the next entry's answer is held past the client's
   timeout after the exchange placed it: looked up by its client id, never sent twice;
2. a second kernel is killed (SIGKILL) right after the exchange accepted its first order,
   before the ledger heard of it;
3. a third kernel finds that order at startup by its client id and books it.

At the end every order the exchange has is in the ledger once, with the exchange's trades
and no more, and the ledger's position is the exchange's balance.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from kernel.feeds.synthetic import SyntheticFeed
from kernel.protocol import SlotConfig
from tests.kernel.ccxt_http import Reply
from tests.support.fake_binance import TEST_KEY, TEST_SECRET, FakeBinanceServer
from tests.support.kernel_process import KernelProcess, kernel_env
from tests.support.ledger_reader import sqlite_rows as rows
from tests.support.slot_seeds import seed_slots
from tests.support.strategy_folders import write_strategies
from tests.support.strategy_sources import FLIPFLOP
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORDER = ("POST", "/api/v3/order")
MINUTE = 60_000


def _kernel(state: Path, ex: FakeBinanceServer, strategies: Path, start_ms: int, **env: str) -> KernelProcess:
    # 1m candles at 10x: a close every 6 s, over the exchange's last half hour (--start in its past).
    return KernelProcess(state, [
        "--feed", "ccxt", "--broker", "ccxt", "--exchange", "binance", "--exchange-url", ex.url,
        "--strategies-dir", str(strategies), "--speed", "10", "--start", str(start_ms), "--tick-ms", "20",
    ], env=kernel_env(FORESIGHT_BINANCE_API_KEY=TEST_KEY, FORESIGHT_BINANCE_SECRET=TEST_SECRET, **env))


def _orders(state: Path) -> list[dict]:
    return rows(state / "ledger.sqlite3", "SELECT client_order_id, intent, side, qty, status, filled_qty, error"
                                          " FROM orders ORDER BY created_ms, client_order_id")


def _fills(state: Path) -> list[dict]:
    return rows(state / "ledger.sqlite3", "SELECT fill_id, client_order_id, side, qty, price FROM fills")


def test_a_kernel_trades_binance_over_real_http(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    start_ms = now - now % MINUTE - 30 * MINUTE
    history = SyntheticFeed(7).candles("BTC/USDT", "1m", now + MINUTE, 120)
    state = tmp_path / "state"
    strategies = write_strategies(tmp_path / "strategies", {"flipflop": FLIPFLOP})
    seed_slots(state, [SlotConfig(id="btc-1m", symbol="BTC/USDT", timeframe="1m", strategy="flipflop",
                                  order_notional=100.0)])
    with FakeBinanceServer(prices={"BTCUSDT": round(history[-1].close, 2)}) as ex:
        ex.add_candles("BTCUSDT", "1m", history)
        ex.on_nth(*ORDER, 1, reply=Reply(429, {"code": -1003, "msg": "Too many requests; current limit exceeded"}))
        ex.on_nth(*ORDER, 3, partial=0.6)  # the first exit: 60 % filled, then expired
        ex.on_nth(*ORDER, 5, hang=6.0)  # past ccxt's 5 s timeout, after the exchange placed it

        # -- 1: entry (after a 429), a partial exit, the rest, an entry whose answer is lost
        k1 = _kernel(state, ex, strategies, start_ms).start()
        try:
            def fourth_resolved():
                o = _orders(state)
                return len(o) >= 4 and o[3]["status"] in ("filled", "cancelled", "rejected") and o
            orders = wait_until(fourth_resolved, timeout=120, what="four orders, the last one final",
                                abort=lambda: k1.check_alive(), last_seen=lambda: str(_orders(state)))
        finally:
            k1.stop()
        entry, exit1, exit2, entry2 = orders[:4]
        assert [o["intent"] for o in orders[:4]] == ["entry", "exit", "exit", "entry"]
        assert (entry["side"], entry["status"]) == ("buy", "filled")
        assert ex.requests_to("POST", "/api/v3/order")[0].form["newClientOrderId"] == entry["client_order_id"]
        assert ex.count(*ORDER) >= 5
        assert exit1["side"] == "sell" and exit1["filled_qty"] == pytest.approx(0.6 * exit1["qty"], abs=1e-5)
        assert exit1["status"] in ("cancelled", "filled")  # an expired market order: what it filled is booked
        assert exit2["side"] == "sell" and exit2["status"] == "filled"
        assert exit2["qty"] == pytest.approx(exit1["qty"] - exit1["filled_qty"], abs=1e-5)
        hung = entry2["client_order_id"]
        assert entry2["side"] == "buy" and entry2["status"] == "filled"
        sent = [r for r in ex.requests_to(*ORDER) if r.form.get("newClientOrderId") == hung]
        assert ex.exchange.orders[hung]["status"] == "FILLED"
        assert len(sent) == 1, "the order whose answer was lost was looked up, not sent again"

        # The feed kept its candles and the markets in the state dir (item 11).
        cache = state / "ccxt-cache" / "binance"
        assert (cache / "markets.json").is_file() and (cache / "candles-BTC_USDT-1m.json").is_file()
        klines_before = len(ex.requests_to("GET", "/api/v3/klines"))

        # -- 2: killed right after the exchange accepted its first order
        n_before = len(ex.exchange.orders)
        k2 = _kernel(state, ex, strategies, start_ms, FORESIGHT_CRASH_AT="order_placed:1")
        k2.start(wait=False)
        assert k2.wait_exit(timeout=120) != 0
        assert len(ex.exchange.orders) == n_before + 1
        in_flight = [o for o in _orders(state) if o["status"] in ("intent", "sent")]
        assert len(in_flight) == 1 and in_flight[0]["client_order_id"] in ex.exchange.orders

        # -- 3: the restart books it from the exchange, by its client id
        k3 = _kernel(state, ex, strategies, start_ms).start()
        try:
            cid = in_flight[0]["client_order_id"]
            wait_until(lambda: next(o for o in _orders(state) if o["client_order_id"] == cid)["status"] == "filled",
                       timeout=60, what="the in-flight order booked", abort=lambda: k3.check_alive())
        finally:
            k3.stop()

        # Markets loaded once for three kernels; a restarted kernel asked only for the candles
        # after its saved ones (small requests), never for the whole window again.
        assert ex.count("GET", "/api/v3/exchangeInfo") == 1
        later = ex.requests_to("GET", "/api/v3/klines")[klines_before:]
        assert later and all(int(r.query["limit"]) <= 20 for r in later), [r.query for r in later]

        # -- every order at the exchange once in the ledger, its trades and no more; position = balance
        ledger = {o["client_order_id"]: o for o in _orders(state)}
        fills = _fills(state)
        assert len({f["fill_id"] for f in fills}) == len(fills)
        for cid, o in ex.exchange.orders.items():
            assert cid in ledger, f"{cid} is at the exchange, not in the ledger"
            trades = ex.exchange.trades.get(int(o["orderId"]), [])
            booked = [f for f in fills if f["client_order_id"] == cid]
            assert len(booked) == len(trades), (cid, booked, trades)
            assert sorted(f["price"] for f in booked) == pytest.approx(sorted(float(t["price"]) for t in trades))
        held = sum(f["qty"] if f["side"] == "buy" else -f["qty"] for f in fills)
        assert held == pytest.approx(ex.exchange.balances.get("BTC", 0.0), abs=1e-9)
        assert ex.bad_signatures == 0
