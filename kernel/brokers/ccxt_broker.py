"""A :class:`kernel.brokers.Broker` on a real exchange, through ccxt.

Spot, long only, like the paper broker. Every order carries the kernel's client
order id (``params={"clientOrderId": cid}``; ccxt maps it to the exchange's field:
Binance ``newClientOrderId``, OKX ``clOrdId``) and is looked up by it
(``fetch_order(None, symbol, {"clientOrderId": cid})``: Binance ``origClientOrderId``).

Placing an order is idempotent by its client id:

- a temporary error (network, timeout, rate limit, exchange busy) on create leaves
  the outcome unknown: the order is looked up by its client id before any retry, and
  an order the exchange has is returned, never sent again;
- an exchange that says the client id is already used gets the existing order fetched;
- a refusal (insufficient funds, invalid order, bad request) is ``OrderRejected``
  at once, never retried; bad keys are ``AuthenticationFailed``.

Fills come from the order's trades (Binance returns them with a market order's
acknowledgement) or, when the order structure has none, from ``fetch_order_trades``
(``fetch_my_trades`` of the order's market where that is what the exchange has). An
order final with a filled quantity whose trades are not published yet comes back
without fills: the kernel keeps it "final, trades pending" and fetches it again until
they are (kernel.order_sync); only an exchange that offers neither call gets one
aggregate fill (fee unknown: 0). A fill's id is ``<exchange order id>:<trade id>``
(trade ids are unique per market only). A fee paid in the base currency is taken off
the fill's quantity (that is what the account holds) and reported in quote at the fill
price, so positions match balances and P&L includes the fee; a fee in a third currency
(BNB...) is converted to the quote at that currency's last price on the exchange
(``fetch_ticker("BNB/USDT")``, cached a minute), the charge and the rate used kept on
the fill (``charged_fee``, ``charged_currency``, ``fee_rate_used``).

Where the exchange offers a dead man's switch (ccxt ``cancelAllOrdersAfter``; older
ccxt versions call the capability ``cancelAllAfter``), :meth:`CcxtBroker.on_tick`
keeps it armed: see :class:`kernel.brokers.dead_man_switch.DeadManSwitch`.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kernel.brokers import Broker, BrokerOrder, Fill, MarketRules, OrderRequest, split_symbol
from kernel.brokers.dead_man_switch import DeadManSwitch
from kernel.errors import AuthenticationFailed, OrderNotFound, OrderRejected, TemporaryError
from kernel.exchange_client import DuplicateClientOrderId, ExchangeClient

__all__ = ["CcxtBroker"]

log = logging.getLogger("kernel.brokers.ccxt")

_STATUS = {"open": "open", "closed": "filled", "canceled": "cancelled", "cancelled": "cancelled",
           "expired": "cancelled", "rejected": "rejected"}


class CcxtBroker(Broker):
    """Orders on ``client``'s exchange. ``retry_budget_s`` bounds how long one call
    (with its retries) may take: keep it well under the kernel's cycle deadline.
    ``fill_wait_s``: how long a market order is polled until it reports final."""

    def __init__(
        self,
        client: ExchangeClient,
        *,
        retry_budget_s: float | None = None,
        fill_wait_s: float = 2.0,
        dead_man_switch: bool = True,
        dms_timeout_s: float = 60.0,
        dms_refresh_s: float = 10.0,
    ) -> None:
        self.client = client
        self.name = f"ccxt:{client.id}"
        self.retry_budget_s = client.retry_budget_s if retry_budget_s is None else float(retry_budget_s)
        self.fill_wait_s = float(fill_wait_s)
        self._symbols: dict[str, str] = {}  # client order id -> symbol, for lookups without one
        self._symbols_lock = threading.Lock()
        self._warned_fee: set[str] = set()
        self._fee_rates: dict[str, tuple[float, float]] = {}  # currency -> (quote per unit, when)
        self.dead_man_switch: DeadManSwitch | None = None
        if dead_man_switch and (client.has("cancelAllOrdersAfter") or client.has("cancelAllAfter")):
            self.dead_man_switch = DeadManSwitch(client, timeout_s=dms_timeout_s, refresh_s=dms_refresh_s)
        self._closed = False
        self._ledger: Any = None
        self._balances: dict[str, float] | None = None
        self._balances_at = 0.0
        self._balances_refreshing = threading.Lock()

    def __repr__(self) -> str:
        return f"CcxtBroker({self.client!r})"

    def use_ledger(self, ledger: Any) -> None:
        """The kernel's ledger, where an order's symbol is looked up (exchanges fetch
        orders by client id only within a market)."""
        self._ledger = ledger

    # -- the Broker interface -------------------------------------------------

    def place_order(self, req: OrderRequest, *, ref_price: float, now_ms: int) -> BrokerOrder:
        cid = req.client_order_id
        if req.type not in ("market", "limit"):
            raise OrderRejected(f"invalid order: type must be 'market' or 'limit', not {req.type!r}")
        if req.type == "limit" and not req.limit_price:
            raise OrderRejected("invalid order: a limit order needs limit_price")
        self._remember(cid, req.symbol)
        deadline = self.client.deadline(self.retry_budget_s)
        uncertain = False  # did an earlier attempt maybe reach the exchange?
        attempt = 0
        while True:
            if uncertain:
                try:
                    existing = self._fetch(cid, req.symbol)
                except (TemporaryError, AuthenticationFailed) as exc:
                    # The order may stand: whatever the lookup says, its outcome is still unknown.
                    attempt += 1
                    self.client.wait_before_retry(attempt, TemporaryError(f"order {cid} in doubt: {exc}"), deadline)
                    continue
                if existing is not None:
                    log.warning("%s: order %s was placed before the error: not sent again", self.name, cid)
                    return self._settle(existing, deadline)
            try:
                raw = self.client.call_once(
                    "create_order", req.symbol, req.type, req.side, req.qty,
                    req.limit_price if req.type == "limit" else None,
                    {"clientOrderId": cid, **({"timeInForce": req.time_in_force} if req.type == "limit" else {})},
                )
            except DuplicateClientOrderId:
                existing = self._fetch_retrying(cid, req.symbol, deadline)
                if existing is None:
                    raise OrderRejected(f"{self.client.id} says client order id {cid} is used, "
                                        "but has no order with it") from None
                return self._settle(existing, deadline)
            except TemporaryError as exc:
                uncertain = True
                attempt += 1
                self.client.wait_before_retry(attempt, exc, deadline)
                continue
            except OrderRejected:
                if uncertain:  # a retry refused (e.g. "duplicate" in other words): the first one may stand
                    existing = self._fetch_retrying(cid, req.symbol, deadline)
                    if existing is not None:
                        return self._settle(existing, deadline)
                raise
            order = self._order(raw, cid=cid, symbol=req.symbol, fallback=req, now_ms=now_ms)
            return self._settle(order, deadline, raw_id=str(raw.get("id") or "") or None)

    def fetch_order(self, client_order_id: str, symbol: str | None = None) -> BrokerOrder | None:
        symbol = symbol or self._symbol_of(client_order_id)
        deadline = self.client.deadline(self.retry_budget_s)
        return self._fetch_retrying(client_order_id, symbol, deadline)

    def cancel_order(self, client_order_id: str, symbol: str | None = None) -> BrokerOrder:
        symbol = symbol or self._symbol_of(client_order_id)
        deadline = self.client.deadline(self.retry_budget_s)
        attempt = 0
        while True:
            try:
                self.client.call_once("cancel_order", None, symbol, {"clientOrderId": client_order_id})
                break
            except OrderNotFound:
                break  # already final (filled or cancelled), or never there: the fetch says which
            except TemporaryError as exc:
                attempt += 1
                self.client.wait_before_retry(attempt, exc, deadline)
        order = self._fetch_retrying(client_order_id, symbol, deadline)
        if order is None:
            raise OrderNotFound(f"{self.client.id}: no order with client id {client_order_id}")
        return order

    def open_orders(self, symbol: str | None = None) -> list[BrokerOrder]:
        raws = self.client.call("fetch_open_orders", symbol, budget_s=self.retry_budget_s)
        out = []
        for raw in raws:
            cid = raw.get("clientOrderId") or f"{self.client.id}:{raw.get('id')}"
            self._remember(cid, raw.get("symbol"))
            out.append(self._order(raw, cid=cid, symbol=raw.get("symbol")))
        out.sort(key=lambda o: (o.created_ms, o.broker_order_id))
        return out

    def balances(self) -> dict[str, float]:
        raw = self.client.call("fetch_balance", budget_s=self.retry_budget_s)
        totals = raw.get("total") or {}
        out = {cur: float(v) for cur, v in sorted(totals.items()) if v}
        self._balances, self._balances_at = out, time.monotonic()
        return out

    def cached_balances(self, max_age_s: float = 15.0) -> dict[str, float]:
        """The last balances seen, never waiting on the exchange (status.json is built on
        the tick thread); older than ``max_age_s``, a refresh starts in the background."""
        if time.monotonic() - self._balances_at > max_age_s and self._balances_refreshing.acquire(blocking=False):
            def refresh() -> None:
                try:
                    self.balances()
                except Exception as exc:  # noqa: BLE001 - a status detail; trading reports its own errors
                    log.warning("%s: balances not refreshed: %s", self.name, exc)
                    self._balances_at = time.monotonic()  # not again before max_age_s
                finally:
                    self._balances_refreshing.release()

            threading.Thread(target=refresh, name="balances", daemon=True).start()
        return dict(self._balances or {})

    def market_rules(self, symbol: str) -> MarketRules:
        """The market's minimums and amount step from ``load_markets`` (``limits.amount.min``,
        ``limits.cost.min``, ``precision.amount``): checked before an order is sent; a position
        below them cannot be sold (fees paid in the base currency leave such dust), so the
        kernel counts it as flat. No rules when the market is unknown."""
        try:
            if not self.client.exchange.markets:
                self.client.call("load_markets", budget_s=self.retry_budget_s)
            market = self.client.exchange.market(symbol)
        except Exception:  # noqa: BLE001 - no market data: no rules, the exchange will say
            return MarketRules()
        from ccxt.base.decimal_to_precision import TICK_SIZE

        step = (market.get("precision") or {}).get("amount")
        if step is not None and self.client.exchange.precisionMode != TICK_SIZE:
            step = 10.0 ** -float(step)  # DECIMAL_PLACES / SIGNIFICANT_DIGITS: a number of digits
        limits = market.get("limits") or {}
        return MarketRules(amount_min=float(((limits.get("amount") or {}).get("min")) or 0.0),
                           amount_step=float(step or 0.0),
                           cost_min=float(((limits.get("cost") or {}).get("min")) or 0.0))

    def mark_price(self, symbol: str, price: float, now_ms: int) -> list[Fill]:
        return []  # the exchange matches orders itself; fills are seen by fetching orders

    def on_tick(self) -> None:
        """Called from the kernel's tick loop: proof of life for the dead man's switch."""
        if self.dead_man_switch is not None and not self._closed:
            self.dead_man_switch.heartbeat()

    def describe(self) -> dict[str, Any]:
        """For status.json: what this broker is, never its keys."""
        d: dict[str, Any] = {"name": self.name, "exchange": self.client.id, "sandbox": self.client.sandbox,
                             "keys": self.client.credentials.describe() if self.client.credentials else None}
        if self.dead_man_switch is not None:
            d["dead_man_switch"] = self.dead_man_switch.describe()
        return d

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.dead_man_switch is not None:
            self.dead_man_switch.disarm()  # a graceful stop: resting orders stay, as the operator left them

    # -- internals ------------------------------------------------------------

    def _remember(self, cid: str, symbol: str | None) -> None:
        if symbol:
            with self._symbols_lock:
                self._symbols[cid] = symbol

    def _symbol_of(self, cid: str) -> str:
        with self._symbols_lock:
            symbol = self._symbols.get(cid)
        if symbol is None and self._ledger is not None:
            row = self._ledger.order(cid)
            symbol = row["symbol"] if row else None
        if symbol is None:
            raise OrderNotFound(f"{self.client.id}: the symbol of order {cid} is unknown: pass symbol=")
        return symbol

    def _fetch(self, cid: str, symbol: str) -> BrokerOrder | None:
        """One lookup by client id, with its fills; None if the exchange does not know it."""
        try:
            raw = self.client.call_once("fetch_order", None, symbol, {"clientOrderId": cid})
        except OrderNotFound:
            return None
        self._remember(cid, symbol)
        order = self._order(raw, cid=cid, symbol=symbol)
        return self._with_trades(order)

    def _fetch_retrying(self, cid: str, symbol: str, deadline: float) -> BrokerOrder | None:
        attempt = 0
        while True:
            try:
                return self._fetch(cid, symbol)
            except TemporaryError as exc:
                attempt += 1
                self.client.wait_before_retry(attempt, exc, deadline)

    def _settle(self, order: BrokerOrder, deadline: float, raw_id: str | None = None) -> BrokerOrder:
        """A market order that is not final yet is polled a little (fills land in ms);
        an order with fills reported but no trades gets its trades fetched."""
        poll_until = min(deadline, time.monotonic() + self.fill_wait_s)
        delay = 0.05
        while order.type == "market" and not order.is_final and time.monotonic() + delay < poll_until:
            time.sleep(delay)
            delay = min(0.5, delay * 2)
            fetched = self._fetch_retrying(order.client_order_id, order.symbol, deadline)
            if fetched is not None:
                order = fetched
        if order.filled_qty > 0 and not order.fills:
            order = self._trades_for(order, deadline)
        return order

    def _with_trades(self, order: BrokerOrder) -> BrokerOrder:
        if order.filled_qty > 0 and not order.fills:
            return self._trades_for(order, self.client.deadline(self.retry_budget_s))
        return order

    def _trades_for(self, order: BrokerOrder, deadline: float) -> BrokerOrder:
        """The order with its trades as fills; without fills while the exchange has not
        published its trades yet (the kernel looks again: "trades pending")."""
        if self.client.has("fetchOrderTrades"):
            call: tuple = ("fetch_order_trades", order.broker_order_id, order.symbol)
        elif self.client.has("fetchMyTrades"):
            call = ("fetch_my_trades", order.symbol, order.created_ms - 1000)
        else:
            return self._aggregate_fill(order)
        attempt = 0
        while True:
            try:
                trades = self.client.call_once(*call)
                break
            except TemporaryError as exc:
                attempt += 1
                self.client.wait_before_retry(attempt, exc, deadline)
        trades = [t for t in trades or () if str(t.get("order") or order.broker_order_id) == order.broker_order_id]
        fills = self._fills(trades, order.client_order_id, order.symbol, order.side, order.broker_order_id,
                            order.created_ms)
        if not fills:
            log.info("%s: order %s is %s but its trades are not published yet", self.name,
                     order.client_order_id, order.status)
            return order
        return _replace(order, fills=fills)

    def _fee_rate(self, currency: str, quote: str) -> float | None:
        """Quote per unit of ``currency`` (its last price on the exchange, cached a minute), or None."""
        cached = self._fee_rates.get(currency)
        if cached is not None and time.monotonic() - cached[1] < 60.0:
            return cached[0]
        try:
            ticker = self.client.call("fetch_ticker", f"{currency}/{quote}", budget_s=self.retry_budget_s)
            rate = float(ticker.get("last") or ticker.get("close") or 0.0)
        except Exception as exc:  # noqa: BLE001 - no price: the fee cannot be converted
            log.warning("%s: no %s/%s price to convert a fee: %s", self.name, currency, quote, exc)
            return None
        if rate <= 0:
            return None
        self._fee_rates[currency] = (rate, time.monotonic())
        return rate

    def _aggregate_fill(self, order: BrokerOrder) -> BrokerOrder:
        """No trade ids to be had: one fill for the whole order, only once it is final
        (so that its id can never be followed by a second, overlapping one)."""
        if not order.is_final or order.filled_qty <= 0 or order.avg_price is None:
            return order
        _, quote = split_symbol(order.symbol)
        fill = Fill(f"{order.broker_order_id}:all", order.client_order_id, order.symbol, order.side,
                    order.filled_qty, order.avg_price, 0.0, quote, order.created_ms)
        return _replace(order, fills=(fill,))

    def _order(self, raw: dict, *, cid: str, symbol: str | None, fallback: OrderRequest | None = None,
               now_ms: int | None = None) -> BrokerOrder:
        symbol = raw.get("symbol") or symbol or (fallback.symbol if fallback else "")
        filled = float(raw.get("filled") or 0.0)
        amount = raw.get("amount")
        qty = float(amount) if amount is not None else (fallback.qty if fallback else filled)
        ccxt_status = raw.get("status")
        if ccxt_status is None:  # an acknowledgement without a status (OKX): open until fetched
            status = "open"
        else:
            status = _STATUS.get(ccxt_status, "open")
        if status == "open" and filled > 0:
            status = "partially_filled"
        avg = raw.get("average")
        if avg is None and filled > 0 and raw.get("cost"):
            avg = float(raw["cost"]) / filled
        created = raw.get("timestamp") or now_ms or int(time.time() * 1000)
        side = raw.get("side") or (fallback.side if fallback else "")
        oid = str(raw.get("id") or "")
        fills = self._fills(raw.get("trades") or (), cid, symbol, side, oid, int(created))
        return BrokerOrder(
            client_order_id=raw.get("clientOrderId") or cid,
            broker_order_id=oid,
            symbol=symbol,
            side=side,
            type=raw.get("type") or (fallback.type if fallback else "market"),
            qty=qty,
            limit_price=float(raw["price"]) if raw.get("type") == "limit" and raw.get("price") else None,
            status=status,  # type: ignore[arg-type]
            filled_qty=filled,
            avg_price=float(avg) if avg is not None else None,
            fills=fills,
            created_ms=int(created),
        )

    def _fills(self, trades: Any, cid: str, symbol: str, side: str, order_id: str, created_ms: int) -> tuple[Fill, ...]:
        base, quote = split_symbol(symbol)
        fills = []
        for i, t in enumerate(trades or ()):
            trade_id = t.get("id")
            if trade_id is None:
                return ()  # without ids fills cannot be recorded exactly once: aggregate instead
            qty = float(t.get("amount") or 0.0)
            price = float(t.get("price") or 0.0)
            if qty <= 0 or price <= 0:
                continue
            fee_quote = 0.0
            charged, charged_cur, rate_used = 0.0, quote, 1.0
            for fee in t.get("fees") or ([t["fee"]] if t.get("fee") else []):
                cost = float(fee.get("cost") or 0.0)
                cur = fee.get("currency")
                if not cost:
                    continue
                if cur == quote:
                    rate = 1.0
                elif cur == base:
                    qty -= cost  # the account received qty - fee
                    rate = price
                else:
                    rate = self._fee_rate(str(cur), quote)
                    if rate is None:
                        if cur not in self._warned_fee:
                            self._warned_fee.add(str(cur))
                            log.warning("%s: fees paid in %s are not counted in the ledger (no price for them)",
                                        self.name, cur)
                        rate = 0.0
                fee_quote += cost * rate
                charged, charged_cur, rate_used = cost, str(cur), rate
            fills.append(Fill(
                fill_id=f"{order_id}:{trade_id}",
                client_order_id=cid,
                symbol=symbol,
                side=t.get("side") or side,
                qty=qty,
                price=price,
                fee=fee_quote,
                fee_currency=quote,
                ts_ms=int(t.get("timestamp") or created_ms),
                charged_fee=charged,
                charged_currency=charged_cur,
                fee_rate_used=rate_used,
            ))
        return tuple(fills)


def _replace(order: BrokerOrder, **changes: Any) -> BrokerOrder:
    from dataclasses import replace

    return replace(order, **changes)
