"""The ccxt broker, driven through ccxt's real Binance and OKX classes with recorded payloads.

Only the socket is fake (tests/kernel/ccxt_http.py mounts a transport adapter on the
exchange's requests session): ccxt builds and signs the requests, parses the answers
and maps HTTP and exchange errors with its own code.
"""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from kernel.brokers import Broker, OrderRequest
from kernel.brokers.ccxt_broker import CcxtBroker
from kernel.clock import ManualClock
from kernel.credentials import Credentials, RedactSecrets, load_credentials
from kernel.errors import AuthenticationFailed, OperationalError, OrderNotFound, OrderRejected, TemporaryError
from kernel.exchange_client import DuplicateClientOrderId, ExchangeClient, build_exchange, translate_error
from kernel.feeds.ccxt_feed import CcxtFeed
from kernel.feeds.synthetic import SyntheticFeed
from kernel.kernel import Kernel, KernelOptions
from kernel.protocol import SlotConfig, Status
from tests.kernel.ccxt_http import FakeBinance, FakeOkx, Lost, Reply, fixture
from tests.support.slot_seeds import seed_slots
from tests.support.status_reader import read_status
from tests.support.strategy_sources import flipflop_source
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
CID = "fs0123456789abcdef0123456789abcd"
BINANCE_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
BINANCE_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
OKX_KEY, OKX_SECRET, OKX_PASSWORD = "5f3c8a2e-7d41-4b6f-9e0a-1c2d3e4f5a6b", "8D2E0C1B6A5F4E3D2C1B0A9F8E7D6C5B", "Pass-phrase-42"


def _client(exchange_id: str, fake, creds: Credentials | None, **kw) -> ExchangeClient:
    exchange = build_exchange(exchange_id, credentials=creds)
    fake.mount(exchange)
    kw.setdefault("backoff_s", 0.001)
    kw.setdefault("max_backoff_s", 0.004)
    return ExchangeClient(exchange, credentials=creds, **kw)


@pytest.fixture
def binance():
    fake = FakeBinance()
    creds = Credentials("binance", "test", BINANCE_KEY, BINANCE_SECRET)
    client = _client("binance", fake, creds)
    broker = CcxtBroker(client, retry_budget_s=2.0, fill_wait_s=0.5)
    yield fake, broker
    broker.close()


@pytest.fixture
def okx():
    fake = FakeOkx()
    creds = Credentials("okx", "test", OKX_KEY, OKX_SECRET, OKX_PASSWORD)
    client = _client("okx", fake, creds)
    broker = CcxtBroker(client, retry_budget_s=2.0, fill_wait_s=1.0, dms_refresh_s=0.05, dms_timeout_s=60)
    yield fake, broker
    broker.close()


def buy(cid: str = CID, qty: float = 0.00275, **kw) -> OrderRequest:
    return OrderRequest(cid, kw.pop("symbol", "BTC/USDT"), "buy", qty, **kw)


# ------------------------------------------------------------------ Binance: orders and fills


def test_it_is_a_broker(binance) -> None:
    assert isinstance(binance[1], Broker)


def test_market_order_carries_the_client_id_and_its_fills_come_from_the_ack(binance) -> None:
    fake, broker = binance
    bo = broker.place_order(buy(), ref_price=36400.0, now_ms=1)
    [post] = fake.requests_to("POST", "/api/v3/order")
    assert post.form["newClientOrderId"] == CID and post.form["type"] == "MARKET"
    assert post.form["quantity"] == "0.00275" and "X-MBX-APIKEY" in post.headers
    assert bo.client_order_id == CID and bo.status == "filled" and bo.filled_qty == pytest.approx(0.00275)
    # Two trades in the ack; ids are exchange order id : trade id (trade ids are unique per market only).
    assert [f.fill_id for f in bo.fills] == ["28457331:3290147", "28457331:3290148"]
    # The fee was paid in BTC: the account holds qty - fee, and the fee is reported in USDT.
    for f in bo.fills:
        assert f.fee_currency == "USDT" and f.fee > 0
    assert sum(f.qty for f in bo.fills) == pytest.approx(0.00275 * 0.999)
    assert sum(f.fee for f in bo.fills) == pytest.approx(sum(f.qty / 0.999 * 0.001 * f.price for f in bo.fills))
    assert not fake.requests_to("GET", "/api/v3/myTrades"), "the ack's fills were enough"


def test_fetch_order_by_client_id_with_fills_from_the_trades(binance) -> None:
    fake, broker = binance
    broker.place_order(buy(), ref_price=36400.0, now_ms=1)
    bo = broker.fetch_order(CID, symbol="BTC/USDT")
    [get] = fake.requests_to("GET", "/api/v3/order")
    assert get.query["origClientOrderId"] == CID and "orderId" not in get.query  # Binance: id None
    [trades] = fake.requests_to("GET", "/api/v3/myTrades")
    assert trades.query["orderId"] == "28457331"
    assert bo.status == "filled" and [f.fill_id for f in bo.fills] == ["28457331:3290147", "28457331:3290148"]
    assert broker.fetch_order("fs" + "9" * 30, symbol="BTC/USDT") is None  # -2013: never seen


def test_a_reused_client_id_fetches_the_existing_order(binance) -> None:
    fake, broker = binance
    first = broker.place_order(buy(), ref_price=36400.0, now_ms=1)
    again = broker.place_order(buy(), ref_price=36400.0, now_ms=2)  # Binance: -2010 "Duplicate order sent."
    assert len(fake.requests_to("POST", "/api/v3/order")) == 2 and len(fake.orders) == 1
    assert again.broker_order_id == first.broker_order_id
    assert {f.fill_id for f in again.fills} == {f.fill_id for f in first.fills}


def test_429_is_retried_after_looking_the_order_up(binance) -> None:
    fake, broker = binance
    fake.script("POST", "/api/v3/order", fake.error("rate_limited"))
    bo = broker.place_order(buy(), ref_price=36400.0, now_ms=1)
    assert bo.status == "filled" and len(fake.orders) == 1
    trail = [(c.method, c.path) for c in fake.calls if c.path.startswith("/api/v3/order")]
    assert trail == [("POST", "/api/v3/order"), ("GET", "/api/v3/order"), ("POST", "/api/v3/order")]
    assert broker.client.retries >= 1


def test_insufficient_funds_is_rejected_and_never_retried(binance) -> None:
    fake, broker = binance
    with pytest.raises(OrderRejected, match="InsufficientFunds"):
        broker.place_order(buy(qty=1.0), ref_price=36400.0, now_ms=1)  # 36k USDT, 10k held: -2010
    assert len(fake.requests_to("POST", "/api/v3/order")) == 1
    assert not fake.requests_to("GET", "/api/v3/order") and not fake.orders


def test_an_answer_lost_on_the_way_back_is_found_by_client_id_and_not_sent_again(binance) -> None:
    fake, broker = binance
    fake.script("POST", "/api/v3/order", Lost(requests.ConnectionError("connection reset by peer")))
    bo = broker.place_order(buy(), ref_price=36400.0, now_ms=1)
    assert len(fake.requests_to("POST", "/api/v3/order")) == 1, "never sent twice"
    assert fake.requests_to("GET", "/api/v3/order")[0].query["origClientOrderId"] == CID
    assert bo.status == "filled" and len(bo.fills) == 2


def test_a_timeout_before_the_exchange_saw_it_is_retried_once_looked_up(binance) -> None:
    fake, broker = binance
    fake.script("POST", "/api/v3/order", requests.ReadTimeout("read timed out"))
    bo = broker.place_order(buy(), ref_price=36400.0, now_ms=1)
    assert len(fake.requests_to("POST", "/api/v3/order")) == 2 and len(fake.orders) == 1
    assert len(fake.requests_to("GET", "/api/v3/order")) == 1  # looked up (-2013) before the retry
    assert bo.status == "filled"


def test_a_network_down_past_the_budget_is_a_temporary_error(binance) -> None:
    fake, broker = binance
    broker.retry_budget_s = 0.2
    down = [requests.ConnectionError("network unreachable")] * 500
    fake.script("POST", "/api/v3/order", *down)
    fake.script("GET", "/api/v3/order", *down)
    with pytest.raises(TemporaryError, match="NetworkError"):
        broker.place_order(buy(), ref_price=36400.0, now_ms=1)
    assert not fake.orders


def test_bad_keys_are_authentication_failed(binance) -> None:
    fake, broker = binance
    fake.script("POST", "/api/v3/order", fake.error("invalid_key"))
    with pytest.raises(AuthenticationFailed):
        broker.place_order(buy(), ref_price=36400.0, now_ms=1)
    assert len(fake.requests_to("POST", "/api/v3/order")) == 1


def test_limit_orders_rest_list_and_cancel(binance) -> None:
    fake, broker = binance
    limit = broker.place_order(buy("fs" + "1" * 30, qty=0.0028, type="limit", limit_price=35000.0),
                               ref_price=36400.0, now_ms=1)
    assert limit.status == "open" and limit.limit_price == 35000.0 and not limit.fills
    market = broker.place_order(buy(), ref_price=36400.0, now_ms=2)
    assert [o.client_order_id for o in broker.open_orders()] == ["fs" + "1" * 30]
    cancelled = broker.cancel_order("fs" + "1" * 30)
    [delete] = fake.requests_to("DELETE", "/api/v3/order")
    assert delete.query["origClientOrderId"] == "fs" + "1" * 30
    assert cancelled.status == "cancelled" and broker.open_orders() == []
    # A final order cannot be cancelled (-2011): it comes back as it is.
    assert broker.cancel_order(CID).status == "filled" and market.status == "filled"
    with pytest.raises(OrderNotFound):
        broker.cancel_order("fs" + "8" * 30, symbol="BTC/USDT")
    balances = broker.balances()
    assert balances["USDT"] < 10_000 and balances["BTC"] == pytest.approx(sum(f.qty for f in market.fills))


def test_requests_never_overlap_on_one_exchange_instance(binance) -> None:
    """ccxt's sync throttle is not thread-safe: the client serializes every request."""
    fake, broker = binance
    assert broker.client.exchange.enableRateLimit is True
    fake.latency_s = 0.005
    errors: list[BaseException] = []

    def place(i: int) -> None:
        try:
            broker.place_order(buy(f"fs{i:030d}", qty=0.0003), ref_price=36400.0, now_ms=i)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=place, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(fake.orders) == 6
    assert fake.max_inflight == 1


# ------------------------------------------------------------------ error mapping


@pytest.mark.parametrize("ccxt_error, kernel_error", [
    ("NetworkError", TemporaryError), ("RequestTimeout", TemporaryError), ("DDoSProtection", TemporaryError),
    ("RateLimitExceeded", TemporaryError), ("ExchangeNotAvailable", TemporaryError),
    ("OnMaintenance", TemporaryError), ("InvalidNonce", TemporaryError),
    ("InsufficientFunds", OrderRejected), ("InvalidOrder", OrderRejected), ("BadRequest", OrderRejected),
    ("BadSymbol", OrderRejected), ("ExchangeError", OrderRejected),
    ("AuthenticationError", AuthenticationFailed), ("PermissionDenied", AuthenticationFailed),
    ("AccountSuspended", AuthenticationFailed), ("OrderNotFound", OrderNotFound),
    ("DuplicateOrderId", DuplicateClientOrderId),
])
def test_ccxt_errors_map_to_the_kernel_vocabulary(ccxt_error: str, kernel_error: type) -> None:
    import ccxt

    err = translate_error(getattr(ccxt, ccxt_error)("binance something happened"))
    assert type(err) is kernel_error and ccxt_error in str(err)


def test_error_messages_are_redacted() -> None:
    import ccxt

    redactor = RedactSecrets([BINANCE_KEY])
    err = translate_error(ccxt.AuthenticationError(f"okx {{\"msg\": \"bad key {BINANCE_KEY}\"}}"), redactor.redact)
    assert BINANCE_KEY not in str(err) and "[redacted]" in str(err)


# ------------------------------------------------------------------ OKX


def test_okx_market_order_by_client_id_with_fills_from_the_trade_history(okx) -> None:
    fake, broker = okx
    bo = broker.place_order(buy(qty=0.0027), ref_price=36400.0, now_ms=1)
    [post] = fake.requests_to("POST", "/api/v5/trade/batch-orders")
    assert post.form["_"][0]["clOrdId"] == CID and post.form["_"][0]["ordType"] == "market"
    assert post.headers["OK-ACCESS-KEY"] == OKX_KEY and post.headers["OK-ACCESS-PASSPHRASE"] == OKX_PASSWORD
    # The ack has no status: the order was fetched by clOrdId, its fills from the fills history.
    assert fake.requests_to("GET", "/api/v5/trade/order")[0].query["clOrdId"] == CID
    assert bo.status == "filled" and bo.filled_qty == pytest.approx(0.0027)
    assert [f.fill_id for f in bo.fills] == ["650187423562817536:513082990", "650187423562817536:513082991"]
    assert sum(f.qty for f in bo.fills) == pytest.approx(0.0027 * 0.999)  # fees were paid in BTC


def test_okx_errors(okx) -> None:
    fake, broker = okx
    fake.script("POST", "/api/v5/trade/batch-orders", fake.error("insufficient_funds"))
    with pytest.raises(OrderRejected, match="InsufficientFunds"):
        broker.place_order(buy(), ref_price=36400.0, now_ms=1)
    fake.script("POST", "/api/v5/trade/batch-orders", fake.error("invalid_key"))
    with pytest.raises(AuthenticationFailed):
        broker.place_order(buy(), ref_price=36400.0, now_ms=1)
    fake.script("POST", "/api/v5/trade/batch-orders", fake.error("busy"))  # 50013: retried
    first = broker.place_order(buy(), ref_price=36400.0, now_ms=1)
    assert first.status == "filled" and len(fake.orders) == 1
    again = broker.place_order(buy(), ref_price=36400.0, now_ms=2)  # 51016 duplicated clOrdId: fetched
    assert again.broker_order_id == first.broker_order_id and len(fake.orders) == 1


def test_okx_dead_man_switch_is_armed_from_the_tick_loop_and_disarmed_on_stop(okx) -> None:
    fake, broker = okx
    assert broker.client.has("cancelAllOrdersAfter") and broker.dead_man_switch is not None
    assert fake.cancel_all_after == []  # not armed before the kernel ticks

    def armed_thrice() -> bool:
        broker.on_tick()
        return len(fake.cancel_all_after) >= 3

    wait_until(armed_thrice, timeout=5, what="three dead man's switch refreshes", poll=0.01)
    assert fake.cancel_all_after[:3] == ["60", "60", "60"]  # a 60 s timer, refreshed
    assert broker.describe()["dead_man_switch"]["armed"] is True
    time.sleep(0.3)  # no heartbeat for > 2 refresh periods: the switch is left to fire
    silent = len(fake.cancel_all_after)
    time.sleep(0.3)
    assert len(fake.cancel_all_after) == silent
    broker.close()
    assert fake.cancel_all_after[-1] == "0"  # graceful stop: disarmed


def test_binance_spot_has_no_dead_man_switch(binance) -> None:
    assert binance[1].dead_man_switch is None


# ------------------------------------------------------------------ keys


def test_keys_from_the_environment_and_never_in_repr(tmp_path) -> None:
    env = {"FORESIGHT_BINANCE_API_KEY": BINANCE_KEY, "FORESIGHT_BINANCE_SECRET": BINANCE_SECRET}
    creds = load_credentials("binance", environ=env)
    assert creds.api_key == BINANCE_KEY and creds.source == "environment"
    assert BINANCE_KEY not in repr(creds) and BINANCE_SECRET not in str(creds)
    with pytest.raises(OperationalError, match="both"):
        load_credentials("binance", environ={"FORESIGHT_BINANCE_API_KEY": BINANCE_KEY})
    assert load_credentials("binance", environ={}) is None


def test_secrets_file_must_be_private_and_outside_the_repo(tmp_path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"okx": {"apiKey": OKX_KEY, "secret": OKX_SECRET, "password": OKX_PASSWORD}}))
    path.chmod(0o644)
    with pytest.raises(OperationalError, match="chmod 600") as err:
        load_credentials("okx", secrets_file=path, environ={})
    assert OKX_KEY not in str(err.value)
    path.chmod(0o600)
    creds = load_credentials("okx", secrets_file=path, environ={})
    assert (creds.api_key, creds.password) == (OKX_KEY, OKX_PASSWORD)
    assert load_credentials("binance", secrets_file=path, environ={}) is None
    inside = REPO / "var" / f"secrets-test-{os.getpid()}.json"
    inside.parent.mkdir(exist_ok=True)
    inside.write_text(path.read_text())
    try:
        inside.chmod(0o600)
        with pytest.raises(OperationalError, match="inside the repository"):
            load_credentials("okx", secrets_file=inside, environ={})
    finally:
        inside.unlink()


def test_log_handlers_blank_the_keys_in_messages_arguments_and_tracebacks() -> None:
    import io

    from kernel.venues import install_log_redaction

    logger = logging.getLogger("test.redaction")
    logger.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        install_log_redaction(Credentials("binance", "test", BINANCE_KEY, BINANCE_SECRET), logger)
        logger.warning("headers %s", {"X-MBX-APIKEY": BINANCE_KEY})
        try:
            raise RuntimeError(f"signed with {BINANCE_SECRET}")
        except RuntimeError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "X-MBX-APIKEY" in text and "signed with [redacted]" in text
    assert BINANCE_KEY not in text and BINANCE_SECRET not in text


def test_runkernel_refuses_unsafe_keys_without_printing_them(tmp_path) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"binance": {"apiKey": BINANCE_KEY, "secret": BINANCE_SECRET}}))
    secrets.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
    env["DJANGO_SETTINGS_MODULE"] = "tests.integration.kernel_settings"
    cmd = [sys.executable, str(REPO / "manage.py"), "runkernel", "--state-dir", str(tmp_path / "state"),
           "--broker", "ccxt", "--feed", "ccxt", "--exchange", "binance", "--secrets-file", str(secrets)]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "chmod 600" in out.stderr
    assert BINANCE_KEY not in out.stdout + out.stderr and BINANCE_SECRET not in out.stdout + out.stderr
    env["FORESIGHT_BINANCE_API_KEY"] = BINANCE_KEY  # half a pair from the environment
    out = subprocess.run(cmd[:-2], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "FORESIGHT_BINANCE_SECRET" in out.stderr and BINANCE_KEY not in out.stderr


# ------------------------------------------------------------------ in a kernel

T_2205 = 1_699_999_500_000  # a 5m close covered by the recorded klines


def _kernel(tmp_path: Path, fake: FakeBinance, clock: ManualClock, creds: Credentials) -> Kernel:
    strategies = tmp_path / "strategies"
    strategies.mkdir(exist_ok=True)
    (strategies / "flipflop.py").write_text(flipflop_source(warmup=3))
    state = tmp_path / "state"
    if not (state / "ledger.sqlite3").exists():
        seed_slots(state, [SlotConfig(id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="flipflop",
                                      order_notional=100.0)])
    client = _client("binance", fake, creds)
    feed = CcxtFeed(client, wall_ms=lambda: clock.now_ms() + 30_000, max_wait_ms=0)
    broker = CcxtBroker(client, retry_budget_s=2.0, fill_wait_s=0.2)
    return Kernel(KernelOptions(state_dir=state, strategies_dir=strategies, tick_ms=10, workers=2,
                                status_interval_ms=0), clock=clock, feed=feed, broker=broker)


def _cycle(kernel: Kernel, clock: ManualClock, close_ms: int) -> None:
    clock.jump(close_ms - clock.now_ms())
    slot = kernel.slots["btc-5m"]
    before = slot.cycles

    def ticked_past() -> bool:
        kernel.tick_once()
        return slot.cycles != before

    wait_until(ticked_past, timeout=20, what="the cycle to finish", poll=0.01)
    assert slot.cycles == before + 1, "the cycle did not finish"


def test_a_kernel_trades_through_ccxt_reports_auth_failure_and_never_shows_its_keys(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # everything, ccxt's request logging included
    clock = ManualClock(T_2205 - 120_000)
    fake = FakeBinance(server_clock=lambda: clock.now_ms() + 30_000)
    synthetic = SyntheticFeed(seed=3)
    fake.add_klines("BTCUSDT", "5m", synthetic.candles("BTC/USDT", "5m", T_2205 + 3_600_000, 12)[1:])
    creds = Credentials("binance", "test", BINANCE_KEY, BINANCE_SECRET)
    kernel = _kernel(tmp_path, fake, clock, creds)
    try:
        _cycle(kernel, clock, T_2205)  # enter: a market buy at Binance
        _cycle(kernel, clock, T_2205 + 300_000)  # exit
        orders = kernel.ledger.orders()
        assert [(o["intent"], o["status"]) for o in orders] == [("entry", "filled"), ("exit", "filled")]
        assert len(kernel.ledger.fills()) == 4
        # The buy's fee was paid in BTC; the sell was cut to the lot step: less than one step is left,
        # which no order can sell. That dust is flat (the round trip closed) and kept apart, at its cost.
        pos = kernel.ledger.position("btc-5m")
        assert pos.qty == 0 and 0 < pos.dust_qty < kernel.broker.dust_qty("BTC/USDT") == 1e-05
        assert (pos.trades, pos.entry_price) == (1, None)
        # By hand, from the exchange's side: the USDT the round trip cost or made, plus the dust at its cost.
        buys = [t for trades in fake.trades.values() for t in trades if t["isBuyer"]]
        avg_buy = sum(float(t["qty"]) * float(t["price"]) for t in buys) / sum(float(t["qty"]) for t in buys)
        round_trip = (fake.balances["USDT"] - 10_000.0) + fake.balances["BTC"] * avg_buy
        assert fake.balances["BTC"] == pytest.approx(pos.dust_qty, abs=1e-12)
        # (to 1e-6 USDT: the exchange prints commissions and prices to 8 decimals)
        assert pos.realized_pnl == pytest.approx(round_trip, abs=1e-6)
        assert [f["round_trip_pnl"] for f in kernel.ledger.fills()][-1] == pytest.approx(round_trip, abs=1e-6)
        assert pos.wins == (1 if round_trip > 0 else 0)
        assert [r.form["newClientOrderId"] for r in fake.requests_to("POST", "/api/v3/order")] == [
            o["client_order_id"] for o in orders]

        # (Not -2015: once a key has worked, ccxt reads -2015 as a temporary ban and it is retried.)
        fake.script("POST", "/api/v3/order", fake.error("key_format_invalid"))
        _cycle(kernel, clock, T_2205 + 600_000)
        slot = kernel.slots["btc-5m"]
        assert slot.fault and "authentication failed" in slot.fault and slot.state == "paused"
        assert slot.last_order["status"] == "rejected"
        _cycle(kernel, clock, T_2205 + 900_000)  # paused: no entry is sent
        assert len(fake.requests_to("POST", "/api/v3/order")) == 3
        kernel.status.publish()
        time.sleep(0.2)
    finally:
        kernel.shutdown()
    status_text = (tmp_path / "state" / "status.json").read_text()
    status = Status.model_validate_json(status_text)
    [slot_status] = status.slots
    assert slot_status.state == "paused" and "authentication failed" in slot_status.fault
    assert status.broker["exchange"] == "binance" and status.broker["keys"] == {"source": "test", "password": False}
    assert any("X-MBX-APIKEY" in r.getMessage() for r in caplog.records), "ccxt's request log was captured"
    for secret in (BINANCE_KEY, BINANCE_SECRET):
        assert secret not in status_text
        assert secret not in caplog.text
        assert secret.encode() not in (tmp_path / "state" / "ledger.sqlite3").read_bytes()


def test_startup_reconciles_with_binance(tmp_path) -> None:
    clock = ManualClock(T_2205 - 120_000)
    fake = FakeBinance(server_clock=lambda: clock.now_ms() + 30_000)
    creds = Credentials("binance", "test", BINANCE_KEY, BINANCE_SECRET)
    kernel = _kernel(tmp_path, fake, clock, creds)
    kernel.shutdown()
    # What a kill -9 between "sent" and the answer leaves: the exchange filled it, the ledger has an intent.
    from kernel.ledger import Ledger

    ledger = Ledger(tmp_path / "state" / "ledger.sqlite3")
    ledger.record_intent(client_order_id=CID, slot="btc-5m", symbol="BTC/USDT", candle_ms=T_2205, intent="entry",
                         side="buy", qty=0.00275, ref_price=36400.0)
    ledger.mark_order(CID, "sent")
    ledger.record_intent(client_order_id="fs" + "7" * 30, slot="btc-5m", symbol="BTC/USDT", candle_ms=T_2205 - 300_000,
                         intent="entry", side="buy", qty=0.00275, ref_price=36400.0)
    ledger.close()
    exchange_side = _client("binance", fake, creds)
    exchange_side.call("create_order", "BTC/USDT", "market", "buy", 0.00275, None, {"clientOrderId": CID})
    exchange_side.call("create_order", "BTC/USDT", "limit", "buy", 0.001, 30000, {"clientOrderId": "manual-1"})

    kernel = _kernel(tmp_path, fake, clock, creds)
    try:
        found = kernel.reconciled
        assert (found["checked"], found["filled"], found["never_sent"], found["fills_recorded"]) == (2, 1, 1, 2)
        assert found["unknown_open_orders"] == 1 and found["broker_only_orders"][0]["client_order_id"] == "manual-1"
        assert "1 open order(s) at the broker unknown to the ledger" in found["summary"]
        assert kernel.ledger.order(CID)["status"] == "filled"
        assert kernel.ledger.order("fs" + "7" * 30)["status"] == "abandoned"
        assert kernel.slots["btc-5m"].position_qty == pytest.approx(0.00275 * 0.999)
        assert found["position_mismatches"] == []
    finally:
        kernel.shutdown()
    status = read_status(tmp_path / "state")
    assert status["ledger"]["reconciled"]["summary"] == found["summary"]


def test_an_order_lost_in_a_network_outage_is_resolved_before_the_slot_trades_again(tmp_path) -> None:
    clock = ManualClock(T_2205 - 120_000)
    fake = FakeBinance(server_clock=lambda: clock.now_ms() + 30_000)
    fake.add_klines("BTCUSDT", "5m", SyntheticFeed(seed=3).candles("BTC/USDT", "5m", T_2205 + 3_600_000, 12)[1:])
    kernel = _kernel(tmp_path, fake, clock, Credentials("binance", "test", BINANCE_KEY, BINANCE_SECRET))
    kernel.broker.retry_budget_s = 0.3
    try:
        # The exchange fills the buy, the answer is lost, and every lookup fails until the budget is spent.
        outage = [requests.ConnectionError("network unreachable")] * 1000
        fake.script("POST", "/api/v3/order", Lost(requests.ConnectionError("connection reset")), *outage)
        fake.script("GET", "/api/v3/order", *outage)
        _cycle(kernel, clock, T_2205)
        slot = kernel.slots["btc-5m"]
        [order] = kernel.ledger.orders()
        assert slot.last_order["status"] == "unknown" and order["status"] == "sent"
        assert slot.position_qty == 0 and len(fake.orders) == 1  # the exchange has it; the ledger does not know
        fake.scripts.clear()  # the network is back
        _cycle(kernel, clock, T_2205 + 300_000)  # flat by the ledger, the strategy says enter...
        assert slot.last_order["reason"] == "resolved"  # ...but the lost order is looked up first
        assert kernel.ledger.order(order["client_order_id"])["status"] == "filled"
        assert slot.position_qty > 0 and len(fake.orders) == 1, "no second buy"
        _cycle(kernel, clock, T_2205 + 600_000)  # now it knows it holds: exit
        assert kernel.ledger.orders()[-1]["intent"] == "exit" and len(fake.orders) == 2
    finally:
        kernel.shutdown()


def test_halt_reports_at_once_and_cancels_on_a_slow_exchange_off_the_tick_thread(tmp_path) -> None:
    clock = ManualClock(T_2205 - 120_000)
    fake = FakeBinance(server_clock=lambda: clock.now_ms() + 30_000)
    kernel = _kernel(tmp_path, fake, clock, Credentials("binance", "test", BINANCE_KEY, BINANCE_SECRET))
    try:
        resting = kernel.broker.place_order(buy("fs" + "5" * 30, qty=0.001, type="limit", limit_price=30000.0),
                                            ref_price=36400.0, now_ms=clock.now_ms())
        assert resting.status == "open"
        fake.latency_s = 1.5  # every request now takes 1.5 s; the halt waits 0.5 s for its cancels
        kernel.engage_halt("operator test", source="test")
        status = read_status(tmp_path / "state")
        assert status["state"] == "halted" and status["halt"]["cancels_pending"] is True
        assert not fake.requests_to("DELETE", "/api/v3/order"), "the cancel was still in flight"
        kernel.halt.thread.join(timeout=30)
        kernel.tick_once()
        kernel.status.publish()
        time.sleep(0.3)
        status = read_status(tmp_path / "state")
        assert status["halt"]["cancels_pending"] is False
        assert status["halt"]["cancelled_orders"] == ["fs" + "5" * 30] and status["halt"]["cancel_failed"] == []
        assert fake.orders["fs" + "5" * 30]["status"] == "CANCELED"
    finally:
        fake.latency_s = 0
        kernel.shutdown()


# ------------------------------------------------------------------ building a venue


def test_sandbox_urls_or_a_refusal() -> None:
    exchange = build_exchange("binance", sandbox=True)
    assert "testnet" in exchange.urls["api"]["public"]
    with pytest.raises(OperationalError, match="no sandbox"):
        build_exchange("kraken", sandbox=True)  # ccxt has no test URLs for it
    with pytest.raises(OperationalError, match="unknown exchange"):
        build_exchange("no-such-exchange")


@pytest.mark.parametrize("options, message", [
    ({"broker": "ccxt", "feed": "synthetic", "exchange": "binance"}, "real prices"),
    ({"feed": "ccxt"}, "need an exchange"),
    ({"feed": "ccxt", "exchange": "binance", "speed": 60.0}, "wall clock"),
    ({"sandbox": True}, "ccxt feed and broker only"),
    ({"speed": float("inf")}, "replays only"),
    ({"broker": "ccxt", "feed": "ccxt", "exchange": "binance"}, "no keys for binance"),
])
def test_venue_options_that_make_no_sense_are_refused(tmp_path, monkeypatch, options, message) -> None:
    from kernel.venues import build_venue

    for name in list(os.environ):
        if name.startswith("FORESIGHT_"):
            monkeypatch.delenv(name)
    with pytest.raises(OperationalError, match=message):
        build_venue(KernelOptions(state_dir=tmp_path, **options), state_dir=tmp_path)
