"""A fake Binance spot exchange on a real loopback socket, for ``runkernel --exchange-url``.

:class:`FakeBinanceServer` serves Binance's spot REST (``/api/v3``: exchangeInfo, time,
klines, order create/query/cancel, openOrders, myTrades, account) from an ``http.server``
in a thread. The exchange itself is the emulation of ``tests/kernel/ccxt_http.py``
(:class:`~tests.kernel.ccxt_http.FakeBinance`: recorded payloads, orders, trades,
balances); this module puts it behind real sockets, checks every signed request's HMAC
with the test secret, runs its clock on the wall clock, and adds what only a socket can
do: an answer held past the client's timeout (:meth:`hang`), a connection dropped after
the exchange acted (:meth:`drop`). Used by tests/integration/test_ccxt_over_http.py,
``python -m bench.ccxt_feed_fetch`` and ``python -m bench.peer_freqtrade`` (Foresight and freqtrade).
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable
from urllib.parse import parse_qsl, urlsplit

import requests

from tests.kernel.ccxt_http import FakeBinance, Reply, _f, fixture

__all__ = ["FakeBinanceServer", "TEST_KEY", "TEST_SECRET", "INTERVALS"]

TEST_KEY = "fake-binance-test-key-0123456789"
TEST_SECRET = "fake-binance-test-secret-9876543210"
INTERVALS = {"1m": 60_000, "5m": 300_000, "15m": 900_000}
_SIGNED = {"/api/v3/order", "/api/v3/openOrders", "/api/v3/myTrades", "/api/v3/account"}


class _Exchange(FakeBinance):
    """The emulation, plus market orders that fill only in part (Binance: ``EXPIRED``, an
    IOC market order that ran out of book), per-request latency, and resting LIMIT orders
    that trade when the test moves the price (:meth:`trade_limits`)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(server_clock=lambda: time.time_ns() // 1_000_000, **kw)
        self.partial: deque[float] = deque()  # share filled of the next market orders

    def _ticker(self, r):  # type: ignore[override]
        # Binance's 24hr ticker carries the best bid and ask; freqtrade (bench/peer_freqtrade.py)
        # prices its orders from them and trades nothing without them. No book here: both = last.
        reply = super()._ticker(r)
        if reply.status == 200:
            last = reply.body["lastPrice"]
            reply.body.update(bidPrice=last, askPrice=last, bidQty="1.00000000", askQty="1.00000000")
        return reply

    def _create(self, r):  # type: ignore[override]
        share = self.partial.popleft() if self.partial and r.form.get("type") == "MARKET" else None
        if share is None and r.form.get("type") == "LIMIT":  # rests (GTC) or, with no book here, expires (IOC)
            reply = super()._create(r)
            order = self.orders.get(r.form.get("newClientOrderId")) if reply.status == 200 else None
            if order is not None:
                tif = r.form.get("timeInForce", "GTC")
                order.update(timeInForce=tif, **({"status": "EXPIRED"} if tif == "IOC" else {}))
                reply.body.update(timeInForce=tif, status=order["status"])
            return reply
        if share is None:
            return super()._create(r)
        full = float(r.form["quantity"])
        r.form = {**r.form, "quantity": _f(round(full * share, 5))}
        reply = super()._create(r)
        if reply.status == 200:
            cid = r.form.get("newClientOrderId")
            for payload in (reply.body, self.orders[cid]):
                payload.update(origQty=_f(full), status="EXPIRED")
        return reply

    def trade_limits(self, symbol: str, price: float, qty: float | None = None) -> int:
        """The market trades at ``price``: resting LIMIT orders on ``symbol`` it crosses (buy:
        price <= limit, sell: price >= limit) fill at their limit, up to ``qty`` each (all that is
        left by default: less leaves them PARTIALLY_FILLED). The fee (0.1 %) is in the quote.
        Returns how many trades were made."""
        made = 0
        for order in list(self.orders.values()):
            if (order["symbol"], order.get("type")) != (symbol, "LIMIT") or order["status"] not in (
                    "NEW", "PARTIALLY_FILLED"):
                continue
            limit, side = float(order["price"]), order["side"]
            if (side == "BUY" and price > limit) or (side == "SELL" and price < limit):
                continue
            left = float(order["origQty"]) - float(order["executedQty"])
            part = round(min(left, qty) if qty is not None else left, 8)
            if part <= 0:
                continue
            fee, base = part * limit * 0.001, symbol[:-4]
            trade = copy.deepcopy(fixture("binance", "my_trades.json")[0])
            trade.update(symbol=symbol, id=next(self.trade_ids), orderId=order["orderId"], price=_f(limit),
                         qty=_f(part), quoteQty=_f(part * limit), commission=_f(fee), commissionAsset="USDT",
                         time=self.server_ms, isBuyer=side == "BUY", isMaker=True)
            self.trades.setdefault(order["orderId"], []).append(trade)
            sign = 1 if side == "BUY" else -1
            self.balances[base] = self.balances.get(base, 0.0) + sign * part
            self.balances["USDT"] = self.balances.get("USDT", 0.0) - sign * part * limit - fee
            executed = float(order["executedQty"]) + part
            order.update(executedQty=_f(executed),
                         cummulativeQuoteQty=_f(float(order["cummulativeQuoteQty"]) + part * limit),
                         status="FILLED" if executed >= float(order["origQty"]) - 1e-12 else "PARTIALLY_FILLED",
                         updateTime=self.server_ms)
            made += 1
        return made


class FakeBinanceServer:
    """``with FakeBinanceServer() as ex: ... ex.url ...``. Thread-safe enough for one kernel."""

    def __init__(self, *, api_key: str = TEST_KEY, secret: str = TEST_SECRET,
                 prices: dict[str, float] | None = None, balances: dict[str, float] | None = None,
                 latency_s: float = 0.0) -> None:
        self.exchange = _Exchange(prices=prices, balances=balances)
        self.exchange.latency_s = latency_s
        self.api_key, self.secret = api_key, secret
        self._after: dict[tuple[str, str], deque] = defaultdict(deque)  # ("hang", s) | ("drop", None)
        self._plan: dict[tuple[str, str, int], dict[str, Any]] = {}  # what the nth such request meets
        self._count: dict[tuple[str, str], int] = defaultdict(int)
        self.lock = threading.Lock()
        self.bad_signatures = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                server._handle(self)

            do_GET = do_POST = do_DELETE = do_PUT = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fake-binance", daemon=True)

    # -- life -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "FakeBinanceServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FakeBinanceServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what a test sets up ----------------------------------------------------

    def add_candles(self, symbol: str, interval: str, candles: Iterable[Any]) -> None:
        """Kernel candles as this exchange's klines (``symbol`` as Binance spells it: BTCUSDT)."""
        self.exchange.add_klines(symbol, interval, list(candles))

    def script(self, method: str, path: str, *outcomes: Any) -> None:
        """One-shot answers that win over the emulation (a Reply: 429, an error body ...)."""
        self.exchange.script(method, path, *outcomes)

    def hang(self, method: str, path: str, seconds: float) -> None:
        """The next such request is handled (an order is placed), then its answer is held
        ``seconds`` before it is sent: past the client's timeout, the client gives up."""
        with self.lock:
            self._after[(method, path)].append(("hang", seconds))

    def drop(self, method: str, path: str) -> None:
        """The next such request is handled, then the connection is closed unanswered."""
        with self.lock:
            self._after[(method, path)].append(("drop", None))

    def fill_partly(self, *shares: float) -> None:
        """The next market orders fill only this share of their quantity (then expire)."""
        self.exchange.partial.extend(shares)

    def on_nth(self, method: str, path: str, n: int, *, reply: Reply | None = None, hang: float | None = None,
               drop: bool = False, partial: float | None = None) -> None:
        """What the ``n``-th (from 1) correctly signed ``method path`` request meets: a scripted
        ``reply`` instead of the exchange (a 429 ...), the exchange's answer held ``hang``
        seconds or ``drop``-ped after it acted, or (a market order) a ``partial`` fill."""
        with self.lock:
            self._plan[(method, path, n)] = {"reply": reply, "hang": hang, "drop": drop, "partial": partial}

    def trade_limits(self, symbol: str, price: float, qty: float | None = None) -> int:
        """Resting LIMIT orders that ``price`` crosses fill (up to ``qty`` each): see :meth:`_Exchange.trade_limits`."""
        with self.lock:
            return self.exchange.trade_limits(symbol, price, qty)

    def count(self, method: str, path: str) -> int:
        with self.lock:
            return self._count[(method, path)]

    def requests_to(self, method: str, path: str) -> list[Any]:
        return self.exchange.requests_to(method, path)

    # -- serving ------------------------------------------------------------------

    def _signature_ok(self, method: str, query: str, body: str, headers: Any) -> bool:
        signed = query if method in ("GET", "DELETE") or not body else body
        if "signature=" not in signed:
            return False
        payload, _, signature = signed.rpartition("&signature=")
        want = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(want, signature) and headers.get("X-MBX-APIKEY") == self.api_key

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length).decode() if length else ""
        parts = urlsplit(h.path)
        method = h.command
        if parts.path in _SIGNED and not self._signature_ok(method, parts.query, body, h.headers):
            with self.lock:
                self.bad_signatures += 1
            self._send(h, 401, '{"code":-1022,"msg":"Signature for this request is not valid."}')
            return
        with self.lock:
            queued = self._after.get((method, parts.path))
            after = queued.popleft() if queued else None
            self._count[(method, parts.path)] += 1
            plan = self._plan.pop((method, parts.path, self._count[(method, parts.path)]), None)
        if plan is not None:
            if plan["reply"] is not None:
                self.exchange.script(method, parts.path, plan["reply"])
            if plan["partial"] is not None:
                self.exchange.partial.append(plan["partial"])
            if plan["hang"] is not None:
                after = ("hang", plan["hang"])
            elif plan["drop"]:
                after = ("drop", None)
        prepared = requests.Request(method, self.url + h.path, data=body or None,
                                    headers={k: v for k, v in h.headers.items()}).prepare()
        try:
            resp = self.exchange.send(prepared)
        except Exception:  # noqa: BLE001 - a scripted lost answer: the exchange acted, the client hears nothing
            after = ("drop", None)
            resp = None
        if after is not None and after[0] == "hang":
            time.sleep(after[1])
        if after is not None and after[0] == "drop" or resp is None:
            h.close_connection = True
            try:
                h.connection.shutdown(2)
            except OSError:
                pass
            return
        self._send(h, resp.status_code, resp.content.decode(), dict(resp.headers))

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        data = text.encode()
        try:
            h.send_response(status)
            for k, v in (headers or {}).items():
                if k.lower() not in ("content-length", "content-type"):
                    h.send_header(k, v)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:  # the client gave up (it timed out): nothing to answer
            pass


def reply(status: int, body: Any) -> Reply:
    """A scripted answer for :meth:`FakeBinanceServer.script`."""
    return Reply(status, body)


def klines_of(candles: Iterable[Any], interval: str) -> list[list]:
    """Kernel candles as Binance kline rows (open time, OHLCV as strings, close time ...)."""
    tf = INTERVALS[interval]
    return [[c.ts, _f(c.open), _f(c.high), _f(c.low), _f(c.close), _f(c.volume), c.ts + tf - 1,
             _f(c.volume * c.close), 100, _f(c.volume / 2), _f(c.volume * c.close / 2), "0"] for c in candles]
