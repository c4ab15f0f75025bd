"""Fake exchanges at the HTTP boundary, for driving ccxt's real exchange classes offline.

A :class:`FakeHTTP` is a ``requests`` transport adapter mounted on an exchange
instance's ``session`` (for http and https): ccxt builds, signs and sends its
requests, parses the answers and maps the errors with its own code; only the socket
is replaced. Nothing can reach the network through a mounted session.

:class:`FakeBinance` and :class:`FakeOkx` answer from the recorded payloads in
``tests/fixtures/ccxt/<exchange>/`` (ids, client ids, quantities and prices filled in
per request) and keep a little state (orders, trades, balances), so that an order
placed can be fetched, cancelled and listed. ``script(method, path, *outcomes)``
queues one-shot answers (a :class:`Reply`, or a ``requests`` exception to raise)
that win over the emulation: rate limits, timeouts, error bodies.
"""
from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import requests
from requests.adapters import BaseAdapter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ccxt"


def fixture(exchange: str, name: str) -> Any:
    return json.loads((FIXTURES / exchange / name).read_text())


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Lost:
    """A scripted outcome: the exchange handles the request, then the answer is lost
    (``error`` is raised instead: a dropped connection, a read timeout)."""

    error: Exception


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, Any]
    headers: dict[str, str]
    url: str

    def arg(self, name: str, default: Any = None) -> Any:
        return self.query.get(name, self.form.get(name, default))


class FakeHTTP(BaseAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.handlers: dict[tuple[str, str], Callable[[Req], Reply]] = {}
        self.scripts: dict[tuple[str, str], deque] = defaultdict(deque)
        self.calls: list[Req] = []
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        self.latency_s = 0.0

    def mount(self, exchange: Any) -> Any:
        exchange.session.mount("https://", self)
        exchange.session.mount("http://", self)
        return exchange

    def on(self, method: str, path: str, handler: Callable[[Req], Reply]) -> None:
        self.handlers[(method, path)] = handler

    def script(self, method: str, path: str, *outcomes: Reply | Exception | Lost) -> None:
        self.scripts[(method, path)].extend(outcomes)

    def requests_to(self, method: str, path: str) -> list[Req]:
        return [c for c in self.calls if c.method == method and c.path == path]

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):  # noqa: D401
        parts = urlsplit(request.url)
        body = request.body.decode() if isinstance(request.body, bytes) else (request.body or "")
        form: dict[str, Any] = {}
        if body:
            try:
                loaded = json.loads(body)
                form = loaded if isinstance(loaded, dict) else {"_": loaded}
            except json.JSONDecodeError:
                form = dict(parse_qsl(body))
        req = Req(request.method, parts.path, dict(parse_qsl(parts.query)), form, dict(request.headers), request.url)
        with self.lock:
            self.calls.append(req)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            script = self.scripts.get((req.method, req.path))
            outcome = script.popleft() if script else None
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
            if isinstance(outcome, Exception):
                raise outcome
            if outcome is None or isinstance(outcome, Lost):
                handler = self.handlers.get((req.method, req.path))
                handled = handler(req) if handler else Reply(404, {"code": -1, "msg": f"no route {req.method} {req.path}"})
                if isinstance(outcome, Lost):
                    raise outcome.error
                outcome = handled
        finally:
            with self.lock:
                self.inflight -= 1
        resp = requests.Response()
        resp.status_code = outcome.status
        resp.reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                       429: "Too Many Requests", 503: "Service Unavailable"}.get(outcome.status, "Error")
        text = outcome.body if isinstance(outcome.body, str) else json.dumps(outcome.body)
        resp._content = text.encode()
        resp.headers["Content-Type"] = "application/json"
        resp.headers.update(outcome.headers)
        resp.url = request.url
        resp.request = request
        return resp

    def close(self) -> None:
        pass


def _f(x: float, digits: int = 8) -> str:
    return f"{x:.{digits}f}"


class FakeBinance(FakeHTTP):
    """Binance spot (api.binance.com) from tests/fixtures/ccxt/binance."""

    def __init__(self, *, server_ms: int = 1_699_999_680_000, prices: dict[str, float] | None = None,
                 balances: dict[str, float] | None = None, server_clock: Callable[[], int] | None = None) -> None:
        super().__init__()
        self._server_ms = server_ms
        self.server_clock = server_clock  # when set, the exchange's time follows it
        self.klines: dict[tuple[str, str], list[list]] = {("BTCUSDT", "5m"): fixture("binance", "klines_BTCUSDT_5m.json")}
        self.prices = {"BTCUSDT": 36404.0, "ETHUSDT": 2050.0, **(prices or {})}
        self.balances = {"USDT": 10_000.0, **(balances or {})}
        self.orders: dict[str, dict] = {}  # clientOrderId -> order status payload
        self.trades: dict[int, list[dict]] = {}
        self.order_ids = itertools.count(28457331)
        self.trade_ids = itertools.count(3290147)
        self.errors = fixture("binance", "errors.json")
        # Fees charged in another asset (Binance's "pay fees with BNB"), at these USDT prices.
        self.fee_asset: str | None = None
        self.asset_prices = {"BNB": 250.0}
        self.publish_trades = True  # False: orders fill but their trades are not visible yet
        self.unpublished: set[int] = set()
        self.on("GET", "/api/v3/exchangeInfo", self._exchange_info)
        self.on("GET", "/api/v3/ticker/24hr", self._ticker)
        self.on("GET", "/api/v3/time", lambda r: Reply(200, {"serverTime": self.server_ms}))
        self.on("GET", "/api/v3/klines", self._klines)
        self.on("POST", "/api/v3/order", self._create)
        self.on("GET", "/api/v3/order", self._fetch)
        self.on("DELETE", "/api/v3/order", self._cancel)
        self.on("GET", "/api/v3/openOrders", self._open)
        self.on("GET", "/api/v3/myTrades", self._my_trades)
        self.on("GET", "/api/v3/account", self._account)

    @property
    def server_ms(self) -> int:
        return self.server_clock() if self.server_clock is not None else self._server_ms

    @server_ms.setter
    def server_ms(self, value: int) -> None:
        self._server_ms = value

    def error(self, name: str) -> Reply:
        e = self.errors[name]
        return Reply(e["status"], e["body"])

    def add_klines(self, symbol: str, interval: str, candles) -> None:
        """Candles (kernel Candle objects) as Binance kline rows, merged into what the exchange has."""
        tf = {"1m": 60_000, "5m": 300_000, "15m": 900_000}[interval]
        rows = {r[0]: r for r in self.klines.get((symbol, interval), [])}
        for c in candles:
            rows[c.ts] = [c.ts, f"{c.open:.8f}", f"{c.high:.8f}", f"{c.low:.8f}", f"{c.close:.8f}",
                          f"{c.volume:.8f}", c.ts + tf - 1, f"{c.volume * c.close:.8f}", 100,
                          f"{c.volume / 2:.8f}", f"{c.volume * c.close / 2:.8f}", "0"]
        self.klines[(symbol, interval)] = [rows[t] for t in sorted(rows)]

    def _exchange_info(self, r: Req) -> Reply:
        info = fixture("binance", "exchangeInfo.json")
        for asset in self.asset_prices:  # markets for the fee assets, shaped like BTCUSDT's
            market = copy.deepcopy(info["symbols"][0])
            market.update(symbol=f"{asset}USDT", baseAsset=asset)
            info["symbols"].append(market)
        return Reply(200, info)

    def _ticker(self, r: Req) -> Reply:
        symbol = r.query["symbol"]
        price = self.asset_prices.get(symbol[:-4]) or self.prices[symbol]
        return Reply(200, {"symbol": symbol, "lastPrice": _f(price), "openPrice": _f(price), "highPrice": _f(price),
                           "lowPrice": _f(price), "volume": "1.0", "quoteVolume": _f(price),
                           "openTime": self.server_ms - 86_400_000, "closeTime": self.server_ms, "count": 1})

    def publish(self) -> None:
        """The trades of every order placed so far become visible."""
        self.unpublished.clear()

    def _klines(self, r: Req) -> Reply:
        rows = self.klines.get((r.query["symbol"], r.query["interval"]), [])
        start = int(r.query.get("startTime", 0))
        limit = int(r.query.get("limit", 500))
        # Like Binance: from startTime, up to limit rows, the forming candle included.
        out = [row for row in rows if row[0] >= start and row[0] <= self.server_ms][:limit]
        return Reply(200, out)

    def _create(self, r: Req) -> Reply:
        cid = r.form.get("newClientOrderId")
        if cid in self.orders:
            return self.error("duplicate_order")
        symbol, side, otype = r.form["symbol"], r.form["side"], r.form["type"]
        qty = float(r.form["quantity"])
        base = symbol[:-4]
        price = float(r.form["price"]) if otype == "LIMIT" else self.prices[symbol]
        if side == "BUY" and qty * price * 1.001 > self.balances.get("USDT", 0.0):
            return self.error("insufficient_funds")
        if side == "SELL" and qty > self.balances.get(base, 0.0) + 1e-12:
            return self.error("insufficient_funds")
        oid = next(self.order_ids)
        if otype == "LIMIT":
            ack = fixture("binance", "order_ack_limit_new.json")
            ack.update(symbol=symbol, orderId=oid, clientOrderId=cid, price=_f(price), origQty=_f(qty),
                       side=side, transactTime=self.server_ms, workingTime=self.server_ms)
            status = fixture("binance", "order_status.json")
            status.update({k: ack[k] for k in ("symbol", "orderId", "clientOrderId", "price", "origQty", "side")},
                          executedQty=_f(0), cummulativeQuoteQty=_f(0), status="NEW", type="LIMIT",
                          time=self.server_ms, updateTime=self.server_ms)
            self.orders[cid] = status
            return Reply(200, ack)
        ack = fixture("binance", "order_ack_market_full.json")
        parts = [round(qty * 0.6, 8), round(qty - round(qty * 0.6, 8), 8)]  # two trades, like the recording
        fills, trades, cost = [], [], 0.0
        for i, part in enumerate(p for p in parts if p > 0):
            px = price + i * 1.8
            fee_cur = base if side == "BUY" else "USDT"
            fee = part * 0.001 if side == "BUY" else part * px * 0.001
            if self.fee_asset is not None:
                fee_cur, fee = self.fee_asset, round(part * px * 0.001 / self.asset_prices[self.fee_asset], 8)
            tid = next(self.trade_ids)
            fills.append({"price": _f(px, 2), "qty": _f(part), "commission": _f(fee), "commissionAsset": fee_cur,
                          "tradeId": tid})
            trade = copy.deepcopy(fixture("binance", "my_trades.json")[0])
            trade.update(symbol=symbol, id=tid, orderId=oid, price=_f(px), qty=_f(part), quoteQty=_f(part * px),
                         commission=_f(fee), commissionAsset=fee_cur, time=self.server_ms, isBuyer=side == "BUY")
            trades.append(trade)
            cost += part * px
            if fee_cur not in (base, "USDT"):
                self.balances[fee_cur] = self.balances.get(fee_cur, 0.0) - fee
            if side == "BUY":
                self.balances["USDT"] -= part * px
                self.balances[base] = self.balances.get(base, 0.0) + part - (fee if fee_cur == base else 0.0)
            else:
                self.balances[base] -= part
                self.balances["USDT"] += part * px - (fee if fee_cur == "USDT" else 0.0)
        ack.update(symbol=symbol, orderId=oid, clientOrderId=cid, origQty=_f(qty), executedQty=_f(qty),
                   cummulativeQuoteQty=_f(cost), side=side, transactTime=self.server_ms,
                   workingTime=self.server_ms, fills=fills)
        status = fixture("binance", "order_status.json")
        status.update(symbol=symbol, orderId=oid, clientOrderId=cid, origQty=_f(qty), executedQty=_f(qty),
                      cummulativeQuoteQty=_f(cost), side=side, time=self.server_ms, updateTime=self.server_ms)
        self.orders[cid] = status
        self.trades[oid] = trades
        if not self.publish_trades:
            self.unpublished.add(oid)
            ack["fills"] = []
        return Reply(200, ack)

    def _find(self, r: Req) -> dict | None:
        cid = r.arg("origClientOrderId")
        if cid is not None:
            return self.orders.get(cid)
        oid = r.arg("orderId")
        return next((o for o in self.orders.values() if str(o["orderId"]) == str(oid)), None)

    def _fetch(self, r: Req) -> Reply:
        order = self._find(r)
        return Reply(200, order) if order else self.error("order_not_found")

    def _cancel(self, r: Req) -> Reply:
        order = self._find(r)
        if order is None or order["status"] not in ("NEW", "PARTIALLY_FILLED"):
            return self.error("unknown_order_cancel")
        order["status"] = "CANCELED"
        ack = fixture("binance", "cancel_ack.json")
        ack.update({k: order[k] for k in ("symbol", "orderId", "price", "origQty", "executedQty", "side", "type")},
                   origClientOrderId=order["clientOrderId"], status="CANCELED", transactTime=self.server_ms)
        return Reply(200, ack)

    def _open(self, r: Req) -> Reply:
        sym = r.query.get("symbol")
        return Reply(200, [o for o in self.orders.values()
                           if o["status"] in ("NEW", "PARTIALLY_FILLED") and (sym is None or o["symbol"] == sym)])

    def _my_trades(self, r: Req) -> Reply:
        oid = int(r.query["orderId"])
        return Reply(200, [] if oid in self.unpublished else self.trades.get(oid, []))

    def _account(self, r: Req) -> Reply:
        acct = fixture("binance", "account.json")
        acct["balances"] = [{"asset": k, "free": _f(v), "locked": _f(0)} for k, v in sorted(self.balances.items())]
        return Reply(200, acct)


class FakeOkx(FakeHTTP):
    """OKX spot (www.okx.com, api v5) from tests/fixtures/ccxt/okx."""

    def __init__(self, *, server_ms: int = 1_699_999_680_000) -> None:
        super().__init__()
        self.server_ms = server_ms
        self.orders: dict[str, dict] = {}  # clOrdId -> order detail
        self.fills: dict[str, list[dict]] = {}  # ordId -> fills
        self.order_ids = itertools.count(650187423562817536)
        self.cancel_all_after: list[str] = []  # timeOut values received
        self.errors = fixture("okx", "errors.json")
        self.on("GET", "/api/v5/public/instruments", lambda r: Reply(200, fixture("okx", "instruments_spot.json")))
        self.on("GET", "/api/v5/public/time", lambda r: Reply(200, {"code": "0", "msg": "", "data": [{"ts": str(self.server_ms)}]}))
        self.on("POST", "/api/v5/trade/order", self._create)
        # ccxt sends a single order to the batch endpoint (a lower rate-limit cost), as a list of one.
        self.on("POST", "/api/v5/trade/batch-orders",
                lambda r: self._create(Req(r.method, r.path, r.query, r.form["_"][0], r.headers, r.url)))
        self.on("GET", "/api/v5/trade/order", self._fetch)
        self.on("GET", "/api/v5/trade/fills-history", self._fills)
        self.on("GET", "/api/v5/trade/fills", self._fills)
        self.on("POST", "/api/v5/trade/cancel-order", self._cancel)
        self.on("GET", "/api/v5/trade/orders-pending", self._pending)
        self.on("GET", "/api/v5/account/balance", lambda r: Reply(200, fixture("okx", "balance.json")))
        self.on("POST", "/api/v5/trade/cancel-all-after", self._cancel_all_after)

    def error(self, name: str) -> Reply:
        e = self.errors[name]
        return Reply(e["status"], e["body"])

    def _create(self, r: Req) -> Reply:
        cid = r.form.get("clOrdId")
        if cid in self.orders:
            return self.error("duplicate_order")
        oid = str(next(self.order_ids))
        ack = fixture("okx", "order_ack.json")
        ack["data"][0].update(clOrdId=cid, ordId=oid, ts=str(self.server_ms))
        detail = fixture("okx", "order_detail.json")["data"][0]
        detail.update(clOrdId=cid, ordId=oid, instId=r.form["instId"], side=r.form["side"], ordType=r.form["ordType"],
                      sz=r.form["sz"], cTime=str(self.server_ms), uTime=str(self.server_ms))
        if r.form["ordType"] == "limit":
            detail.update(px=r.form["px"], state="live", accFillSz="0", avgPx="", fillSz="0", fillPx="", fee="0")
        else:
            sz = float(r.form["sz"])
            recorded = fixture("okx", "fills_history.json")["data"]
            scale = sz / sum(float(f["fillSz"]) for f in recorded)
            fills = []
            for f in recorded:
                f = dict(f, ordId=oid, clOrdId=cid, instId=r.form["instId"], side=r.form["side"],
                         fillSz=f"{float(f['fillSz']) * scale:.8f}", fee=f"{float(f['fee']) * scale:.10f}")
                fills.append(f)
            self.fills[oid] = fills
            detail.update(accFillSz=r.form["sz"], state="filled")
        self.orders[cid] = detail
        return Reply(200, ack)

    def _find(self, r: Req) -> dict | None:
        cid = r.arg("clOrdId")
        if cid is not None:
            return self.orders.get(cid)
        oid = r.arg("ordId")
        return next((o for o in self.orders.values() if o["ordId"] == oid), None)

    def _fetch(self, r: Req) -> Reply:
        order = self._find(r)
        if order is None:
            return self.error("order_not_found")
        return Reply(200, {"code": "0", "msg": "", "data": [order]})

    def _fills(self, r: Req) -> Reply:
        return Reply(200, {"code": "0", "msg": "", "data": list(reversed(self.fills.get(r.query.get("ordId"), [])))})

    def _cancel(self, r: Req) -> Reply:
        order = self._find(r)
        if order is None:
            return self.error("order_not_found")
        order["state"] = "canceled"
        return Reply(200, {"code": "0", "msg": "", "data": [
            {"clOrdId": order["clOrdId"], "ordId": order["ordId"], "sCode": "0", "sMsg": "", "ts": str(self.server_ms)}]})

    def _pending(self, r: Req) -> Reply:
        return Reply(200, {"code": "0", "msg": "", "data": [o for o in self.orders.values() if o["state"] == "live"]})

    def _cancel_all_after(self, r: Req) -> Reply:
        self.cancel_all_after.append(str(r.form.get("timeOut")))
        return Reply(200, fixture("okx", "cancel_all_after.json"))
