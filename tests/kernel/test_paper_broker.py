"""The paper broker: a simulated spot exchange that keeps its own memory in SQLite."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
from decimal import Decimal, localcontext
from pathlib import Path

import pytest

from kernel.brokers import Broker, BrokerOrder, OrderRequest
from kernel.brokers.paper import PaperBroker
from kernel.errors import OperationalError, OrderNotFound, OrderRejected
from tests.support.ledger_reader import sqlite_rows

REPO = Path(__file__).resolve().parents[2]
SYM = "BTC/USDT"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "paper-exchange.sqlite3"


@pytest.fixture
def open_broker(db: Path):
    """Open PaperBrokers on ``db`` (or another path); all closed at teardown."""
    opened: list[PaperBroker] = []

    def _open(path: Path | None = db, **kw) -> PaperBroker:
        b = PaperBroker(path, **kw)
        opened.append(b)
        return b

    yield _open
    for b in opened:
        b.close()


@pytest.fixture
def broker(open_broker) -> PaperBroker:
    return open_broker()


def buy(cid: str, qty: float, **kw) -> OrderRequest:
    return OrderRequest(cid, kw.pop("symbol", SYM), "buy", qty, **kw)


def sell(cid: str, qty: float, **kw) -> OrderRequest:
    return OrderRequest(cid, kw.pop("symbol", SYM), "sell", qty, **kw)


def dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


# -- market orders --------------------------------------------------------------


def test_market_buy_fills_at_ref_plus_slippage_and_pays_fee(broker):
    order = broker.place_order(buy("c1", 0.1), ref_price=50_000.0, now_ms=1_000)

    assert order.status == "filled" and order.is_final
    assert order.broker_order_id == "P-c1"  # derived from the client id, not a counter
    assert [f.fill_id for f in order.fills] == ["P-c1-F1"]
    assert order.filled_qty == 0.1
    assert order.avg_price == pytest.approx(50_025.0)  # +5 bps
    assert order.created_ms == 1_000
    (fill,) = order.fills
    assert fill.client_order_id == "c1" and fill.side == "buy" and fill.qty == 0.1
    assert fill.price == pytest.approx(50_025.0)
    assert fill.fee == pytest.approx(5.0025)  # 0.1% of 5002.5
    assert fill.fee_currency == "USDT"
    assert fill.ts_ms == 1_000
    assert broker.balances() == pytest.approx({"USDT": 10_000 - 5_002.5 - 5.0025, "BTC": 0.1})


def test_market_sell_fills_at_ref_minus_slippage_and_pays_fee(broker):
    broker.place_order(buy("b", 0.1), ref_price=50_000.0, now_ms=1)
    usdt_before = broker.balances()["USDT"]

    order = broker.place_order(sell("s", 0.04), ref_price=60_000.0, now_ms=2)

    (fill,) = order.fills
    assert order.status == "filled"
    assert fill.price == pytest.approx(59_970.0)  # -5 bps
    assert fill.fee == pytest.approx(0.001 * 0.04 * 59_970.0)
    bal = broker.balances()
    assert bal["BTC"] == pytest.approx(0.06)
    assert bal["USDT"] == pytest.approx(usdt_before + 0.04 * 59_970.0 - fill.fee)


def test_fee_and_slippage_are_configurable(open_broker):
    b = open_broker(None, cash=1_000.0, quote="EUR", fee_rate=0.0, slippage_bps=0.0)
    order = b.place_order(OrderRequest("e", "ETH/EUR", "buy", 0.5), ref_price=1_000.0, now_ms=1)
    assert order.fills[0].price == 1_000.0 and order.fills[0].fee == 0.0
    assert b.balances() == {"EUR": 500.0, "ETH": 0.5}


def test_selling_a_whole_position_built_from_float_steps_leaves_exactly_zero(broker):
    broker.place_order(buy("b", 0.3), ref_price=100.0, now_ms=1)
    for i in range(3):  # 0.3 - 0.1 - 0.1 - 0.1 is not 0 in floats
        broker.place_order(sell(f"s{i}", 0.1), ref_price=100.0, now_ms=2)
    assert broker.balances()["BTC"] == 0.0

    broker.place_order(buy("b2", 0.1), ref_price=100.0, now_ms=3)
    broker.place_order(buy("b3", 0.2), ref_price=100.0, now_ms=3)
    # a ledger that summed 0.1 + 0.2 in floats asks to sell 0.30000000000000004
    order = broker.place_order(sell("all", 0.1 + 0.2), ref_price=100.0, now_ms=4)
    assert order.status == "filled"
    assert broker.balances()["BTC"] == 0.0


# -- rejections -----------------------------------------------------------------


def test_buy_without_enough_quote_is_rejected_and_changes_nothing(broker):
    with pytest.raises(OrderRejected, match="insufficient funds"):
        broker.place_order(buy("big", 0.2), ref_price=50_000.0, now_ms=1)  # needs ~10 015 USDT

    assert broker.balances() == {"USDT": 10_000.0}
    assert broker.fetch_order("big") is None
    assert broker.open_orders() == []
    # nothing was stored either
    assert broker.place_order(buy("ok", 0.1), ref_price=50_000.0, now_ms=2).broker_order_id == "P-ok"


def test_buy_that_only_the_fee_makes_unaffordable_is_rejected(open_broker):
    b = open_broker(None, cash=1_000.0, slippage_bps=0.0)
    with pytest.raises(OrderRejected, match="insufficient funds"):
        b.place_order(buy("x", 10.0), ref_price=100.0, now_ms=1)  # 1000 notional + 1 fee
    assert b.balances() == {"USDT": 1_000.0}


def test_sell_without_enough_base_is_rejected_and_changes_nothing(broker):
    with pytest.raises(OrderRejected, match="insufficient funds"):
        broker.place_order(sell("naked", 0.1), ref_price=50_000.0, now_ms=1)

    broker.place_order(buy("b", 0.1), ref_price=50_000.0, now_ms=2)
    before = broker.balances()
    with pytest.raises(OrderRejected, match="insufficient funds"):
        broker.place_order(sell("too-much", 0.2), ref_price=50_000.0, now_ms=3)

    assert broker.balances() == before
    assert broker.fetch_order("naked") is None
    assert broker.fetch_order("too-much") is None


@pytest.mark.parametrize(
    "req, ref_price",
    [
        (buy("q0", 0.0), 100.0),
        (buy("qneg", -1.0), 100.0),
        (buy("qnan", math.nan), 100.0),
        (buy("qinf", math.inf), 100.0),
        (buy("qstr", "1"), 100.0),  # type: ignore[arg-type]
        (OrderRequest("side", SYM, "short", 1.0), 100.0),  # type: ignore[arg-type]
        (buy("type", 1.0, type="stop"), 100.0),  # type: ignore[arg-type]
        (buy("nosep", 1.0, symbol="BTCUSDT"), 100.0),
        (buy("3parts", 1.0, symbol="BTC/USDT/X"), 100.0),
        (buy("otherquote", 1.0, symbol="BTC/EUR"), 100.0),
        (buy("mkt-limit", 1.0, limit_price=90.0), 100.0),
        (buy("lim-none", 1.0, type="limit"), 100.0),
        (buy("lim-nan", 1.0, type="limit", limit_price=math.nan), 100.0),
        (buy("lim-neg", 1.0, type="limit", limit_price=-5.0), 100.0),
        (buy("ref-nan", 1.0), math.nan),
        (buy("ref-zero", 1.0), 0.0),
        (buy("", 1.0), 100.0),
    ],
    ids=lambda v: v.client_order_id or "empty-id" if isinstance(v, OrderRequest) else None,
)
def test_invalid_orders_are_rejected_and_change_nothing(broker, req, ref_price):
    with pytest.raises(OrderRejected, match="invalid order"):
        broker.place_order(req, ref_price=ref_price, now_ms=1)
    assert broker.balances() == {"USDT": 10_000.0}
    assert broker.open_orders() == []
    if req.client_order_id:
        assert broker.fetch_order(req.client_order_id) is None


# -- idempotence ----------------------------------------------------------------


def test_placing_an_existing_client_id_returns_the_stored_order_and_changes_nothing(broker):
    first = broker.place_order(buy("cycle-1", 0.1), ref_price=50_000.0, now_ms=1)
    balances = broker.balances()

    again = broker.place_order(buy("cycle-1", 0.1), ref_price=51_000.0, now_ms=2)
    # a retry computed from different balances must not become a second order either
    other = broker.place_order(buy("cycle-1", 0.05), ref_price=49_000.0, now_ms=3)

    assert again == first and other == first
    assert len(again.fills) == 1
    assert broker.balances() == balances
    assert broker.place_order(buy("cycle-2", 0.01), ref_price=50_000.0, now_ms=4).broker_order_id == "P-cycle-2"


def test_a_rejected_client_id_can_be_placed_later(broker):
    with pytest.raises(OrderRejected):
        broker.place_order(sell("later", 0.1), ref_price=100.0, now_ms=1)
    broker.place_order(buy("funding", 0.1), ref_price=100.0, now_ms=2)
    assert broker.place_order(sell("later", 0.1), ref_price=100.0, now_ms=3).status == "filled"


# -- persistence ----------------------------------------------------------------


def test_closing_and_reopening_the_file_keeps_orders_fills_balances_and_counters(open_broker, db):
    b = open_broker()
    b.place_order(buy("b1", 0.1), ref_price=50_000.0, now_ms=1)
    b.place_order(sell("s1", 0.02), ref_price=52_000.0, now_ms=2)
    b.place_order(sell("rest", 0.05, type="limit", limit_price=60_000.0), ref_price=52_000.0, now_ms=3)
    orders = [b.fetch_order(cid) for cid in ("b1", "s1", "rest")]
    balances, resting = b.balances(), b.open_orders()
    b.close()

    r = open_broker(cash=999.0)  # a reopened exchange remembers its own cash
    assert [r.fetch_order(cid) for cid in ("b1", "s1", "rest")] == orders
    assert r.balances() == balances
    assert r.open_orders() == resting and [o.client_order_id for o in resting] == ["rest"]
    assert r.place_order(buy("b2", 0.001), ref_price=50_000.0, now_ms=4).broker_order_id == "P-b2"
    # the resting sell still holds its 0.05 BTC: only 0.031 is free
    with pytest.raises(OrderRejected, match="insufficient funds"):
        r.place_order(sell("s2", 0.05), ref_price=50_000.0, now_ms=5)
    (fill,) = r.mark_price(SYM, 60_500.0, now_ms=6)
    assert fill.client_order_id == "rest" and fill.price == 60_000.0


def test_reopening_with_another_quote_currency_is_a_misconfiguration(open_broker, db):
    open_broker().close()
    with pytest.raises(OperationalError, match="USDT"):
        PaperBroker(db, quote="EUR")


def test_the_file_is_in_wal_mode(broker, db):
    broker.place_order(buy("b", 0.1), ref_price=100.0, now_ms=1)
    assert sqlite_rows(db, "PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert sqlite_rows(db, "SELECT COUNT(*) AS n FROM orders")[0]["n"] == 1


CRASH_SCRIPT = """
import os, signal, sys
from pathlib import Path
from kernel.brokers import OrderRequest
from kernel.brokers.paper import PaperBroker

path, point, how = sys.argv[1:4]

def hook(p):
    if p == point:
        if how == "exit":
            os._exit(17)
        os.kill(os.getpid(), signal.SIGKILL)

b = PaperBroker(Path(path), crash_hook=hook)
b.place_order(OrderRequest("crash-1", "BTC/USDT", "buy", 0.1), ref_price=50000.0, now_ms=2000)
print("the crash hook never fired")
sys.exit(3)
"""


def run_crashing_place(db: Path, point: str, how: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(db), point, how],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("how, code", [("exit", 17), ("kill", -signal.SIGKILL)])
def test_a_process_killed_right_after_commit_leaves_the_order_on_the_exchange(open_broker, db, how, code):
    b = open_broker()
    b.place_order(buy("before", 0.01), ref_price=50_000.0, now_ms=1000)
    b.close()

    proc = run_crashing_place(db, "after_commit", how)
    assert proc.returncode == code, proc.stdout + proc.stderr

    r = open_broker()
    order = r.fetch_order("crash-1")
    assert order is not None and order.status == "filled" and order.broker_order_id == "P-crash-1"
    assert len(order.fills) == 1
    balances = r.balances()
    assert balances["BTC"] == pytest.approx(0.11)
    # the kernel's retry after the crash gets the same order, not a second one
    assert r.place_order(buy("crash-1", 0.1), ref_price=50_000.0, now_ms=3000) == order
    assert r.balances() == balances


@pytest.mark.parametrize("how, code", [("exit", 17), ("kill", -signal.SIGKILL)])
def test_a_process_killed_before_commit_leaves_nothing(open_broker, db, how, code):
    b = open_broker()
    b.place_order(buy("before", 0.01), ref_price=50_000.0, now_ms=1000)
    balances = b.balances()
    b.close()

    proc = run_crashing_place(db, "before_commit", how)
    assert proc.returncode == code, proc.stdout + proc.stderr

    r = open_broker()
    assert r.fetch_order("crash-1") is None
    assert r.balances() == balances
    retried = r.place_order(buy("crash-1", 0.1), ref_price=50_000.0, now_ms=3000)
    assert retried.broker_order_id == "P-crash-1" and len(retried.fills) == 1


def test_a_crash_hook_raising_before_commit_rolls_back_and_the_broker_stays_usable(open_broker):
    armed = {"before_commit": True, "after_commit": True}
    seen: list[str] = []

    def hook(point: str) -> None:
        seen.append(point)
        if armed.pop(point, False):
            raise RuntimeError(point)

    b = open_broker(crash_hook=hook)
    with pytest.raises(RuntimeError, match="before_commit"):
        b.place_order(buy("x", 0.1), ref_price=100.0, now_ms=1)
    assert b.fetch_order("x") is None and b.balances() == {"USDT": 10_000.0}

    # after_commit raising is a lost ack: the order exists, the caller never heard
    with pytest.raises(RuntimeError, match="after_commit"):
        b.place_order(buy("x", 0.1), ref_price=100.0, now_ms=2)
    stored = b.fetch_order("x")
    assert stored is not None and stored.status == "filled"
    assert b.place_order(buy("x", 0.1), ref_price=100.0, now_ms=3) == stored
    assert seen == ["before_commit", "before_commit", "after_commit"]  # the retry committed nothing


# -- limit orders, mark_price, cancel, open_orders ------------------------------


def test_a_limit_buy_rests_until_the_price_crosses_then_fills_at_the_limit(broker):
    order = broker.place_order(buy("lb", 0.1, type="limit", limit_price=40_000.0), ref_price=50_000.0, now_ms=1)
    assert order.status == "open" and not order.is_final
    assert order.fills == () and order.filled_qty == 0.0 and order.avg_price is None
    assert broker.balances() == {"USDT": 10_000.0}  # reserved, not spent
    assert broker.open_orders() == [order]

    assert broker.mark_price(SYM, 40_001.0, now_ms=2) == []
    assert broker.mark_price("ETH/USDT", 1.0, now_ms=2) == []  # another symbol
    assert broker.mark_price(SYM, math.nan, now_ms=2) == []
    assert broker.fetch_order("lb").status == "open"

    (fill,) = broker.mark_price(SYM, 39_000.0, now_ms=3)
    assert fill.price == 40_000.0 and fill.qty == 0.1 and fill.ts_ms == 3
    assert fill.fee == pytest.approx(4.0)
    filled = broker.fetch_order("lb")
    assert filled.status == "filled" and filled.avg_price == 40_000.0 and filled.fills == (fill,)
    assert broker.balances() == pytest.approx({"USDT": 10_000 - 4_000 - 4.0, "BTC": 0.1})
    assert broker.open_orders() == []
    assert broker.mark_price(SYM, 30_000.0, now_ms=4) == []  # fills once


def test_a_limit_sell_fills_when_the_price_reaches_it(broker):
    broker.place_order(buy("b", 0.1), ref_price=40_000.0, now_ms=1)
    broker.place_order(sell("ls", 0.1, type="limit", limit_price=45_000.0), ref_price=40_000.0, now_ms=2)
    assert broker.mark_price(SYM, 44_999.0, now_ms=3) == []
    assert broker.balances()["BTC"] == pytest.approx(0.1)

    usdt = broker.balances()["USDT"]
    (fill,) = broker.mark_price(SYM, 45_000.0, now_ms=4)
    assert fill.side == "sell" and fill.price == 45_000.0
    assert broker.balances()["BTC"] == 0.0
    assert broker.balances()["USDT"] == pytest.approx(usdt + 4_500.0 - 4.5)


def test_a_resting_limit_buy_reserves_cash_until_cancelled(broker):
    broker.place_order(buy("lb", 0.15, type="limit", limit_price=60_000.0), ref_price=61_000.0, now_ms=1)
    # 9 009 USDT reserved: 991 free
    with pytest.raises(OrderRejected, match="insufficient funds"):
        broker.place_order(buy("m", 0.02), ref_price=60_000.0, now_ms=2)

    cancelled = broker.cancel_order("lb")
    assert cancelled.status == "cancelled" and cancelled.fills == ()
    assert broker.open_orders() == []
    assert broker.place_order(buy("m2", 0.02), ref_price=60_000.0, now_ms=3).status == "filled"
    assert broker.mark_price(SYM, 50_000.0, now_ms=4) == []  # a cancelled order never fills
    assert broker.cancel_order("lb") == cancelled  # already final


def test_cancelling_a_filled_order_returns_it_unchanged(broker):
    filled = broker.place_order(buy("b", 0.1), ref_price=100.0, now_ms=1)
    balances = broker.balances()
    assert broker.cancel_order("b") == filled
    assert broker.balances() == balances


def test_cancelling_an_unknown_order_raises_order_not_found(broker):
    with pytest.raises(OrderNotFound):
        broker.cancel_order("nope")


def test_open_orders_lists_only_open_ones_oldest_first_and_filters_by_symbol(broker):
    broker.place_order(buy("btc-1", 0.01, type="limit", limit_price=30_000.0), ref_price=50_000.0, now_ms=1)
    broker.place_order(OrderRequest("eth-1", "ETH/USDT", "buy", 0.1, "limit", 1_000.0), ref_price=2_000.0, now_ms=2)
    broker.place_order(buy("btc-2", 0.01, type="limit", limit_price=31_000.0), ref_price=50_000.0, now_ms=3)
    broker.place_order(buy("btc-mkt", 0.01), ref_price=50_000.0, now_ms=4)
    broker.place_order(buy("btc-3", 0.01, type="limit", limit_price=32_000.0), ref_price=50_000.0, now_ms=5)
    broker.cancel_order("btc-3")

    assert [o.client_order_id for o in broker.open_orders()] == ["btc-1", "eth-1", "btc-2"]
    assert [o.client_order_id for o in broker.open_orders(SYM)] == ["btc-1", "btc-2"]
    assert [o.client_order_id for o in broker.open_orders("ETH/USDT")] == ["eth-1"]
    assert broker.open_orders("SOL/USDT") == []
    assert all(isinstance(o, BrokerOrder) and o.status == "open" for o in broker.open_orders())


# -- concurrency ----------------------------------------------------------------


def test_concurrent_place_order_from_8_threads_records_everything_once(open_broker):
    b = open_broker(cash=100_000.0)
    n_threads, rounds = 8, 12
    start = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            start.wait()
            for i in range(rounds):
                price = 50_000.0 + 97.0 * t + 13.0 * i
                b.place_order(buy(f"t{t}-b{i}", 0.01 + 0.001 * t), ref_price=price, now_ms=i)
                b.place_order(sell(f"t{t}-s{i}", 0.005), ref_price=price, now_ms=i)
                # every thread also races for the same shared ids: each must exist once
                b.place_order(buy(f"shared-{i}", 0.001), ref_price=price, now_ms=i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors

    ids = [f"t{t}-{k}{i}" for t in range(n_threads) for i in range(rounds) for k in "bs"]
    ids += [f"shared-{i}" for i in range(rounds)]
    orders = [b.fetch_order(cid) for cid in ids]
    assert all(o is not None and o.status == "filled" and len(o.fills) == 1 for o in orders)
    assert [o.broker_order_id for o in orders] == [f"P-{cid}" for cid in ids]  # one each, from its client id

    with localcontext() as ctx:
        ctx.prec = 60
        usdt, btc = Decimal("100000.0"), Decimal(0)
        for o in orders:
            for f in o.fills:
                notional = dec(f.qty) * dec(f.price)
                if f.side == "buy":
                    usdt -= notional + dec(f.fee)
                    btc += dec(f.qty)
                else:
                    usdt += notional - dec(f.fee)
                    btc -= dec(f.qty)
    assert b.balances() == {"USDT": float(usdt), "BTC": float(btc)}
    assert float(btc) == pytest.approx(sum(0.01 + 0.001 * t - 0.005 for t in range(n_threads)) * rounds + 0.001 * rounds)


# -- the interface --------------------------------------------------------------


def test_the_paper_broker_presents_the_broker_interface(open_broker):
    b = open_broker(None)
    assert isinstance(b, Broker)
    assert b.name == "paper"
    b.close()
    b.close()  # idempotent
    with pytest.raises(OperationalError, match="closed"):
        b.balances()


# -- market minimums (a markets table like Binance's) --------------------------------


def test_with_a_markets_table_the_exchange_refuses_what_binance_would(tmp_path):
    from kernel.brokers.paper import BINANCE_SPOT_MARKETS

    with PaperBroker(None, cash=10_000.0, markets=BINANCE_SPOT_MARKETS, slippage_bps=0.0) as b:
        assert b.market_rules(SYM).amount_step == 1e-5 and b.market_rules("NEW/USDT").cost_min == 0.0
        with pytest.raises(OrderRejected, match="minimum order value 5"):
            b.place_order(buy("small", 0.0001), ref_price=40_000.0, now_ms=1)  # 4 USDT
        with pytest.raises(OrderRejected, match="not a multiple of the market's step"):
            b.place_order(buy("odd", 0.000155), ref_price=40_000.0, now_ms=1)
        with pytest.raises(OrderRejected, match="below the market's minimum 1e-05"):
            b.place_order(buy("tiny", 0.000001), ref_price=4_000_000.0, now_ms=1)
        assert b.balances() == {"USDT": 10_000.0} and b.fetch_order("small") is None
        assert b.place_order(buy("ok", 0.00013), ref_price=40_000.0, now_ms=1).status == "filled"  # 5.2 USDT
