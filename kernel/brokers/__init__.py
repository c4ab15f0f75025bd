"""The broker interface every broker presents (paper, ccxt), and its types.

Plain Python, no Django. Quantities are in the base currency, prices and fees in
the quote currency, times in ms since the epoch (UTC). Client order ids are the
kernel's: deterministic per slot and candle, so ``place_order`` is idempotent by
them and a retry after a crash can never double an order. Errors come from
:mod:`kernel.errors`: ``OrderRejected`` (do not retry), ``TemporaryError`` (retry
within the deadline, after looking the order up by its client id),
``AuthenticationFailed``, ``OrderNotFound``.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

__all__ = [
    "Side",
    "OrderType",
    "OrderStatus",
    "FINAL_STATUSES",
    "OrderRequest",
    "Fill",
    "BrokerOrder",
    "MarketRules",
    "Broker",
    "split_symbol",
]

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]
OrderStatus = Literal["open", "filled", "partially_filled", "cancelled", "rejected"]

# An order in one of these states will never change again.
FINAL_STATUSES: frozenset[str] = frozenset({"filled", "cancelled", "rejected"})


@dataclass(frozen=True)
class OrderRequest:
    """What the kernel asks a broker to do. ``limit_price`` only for ``type="limit"``."""

    client_order_id: str
    symbol: str  # "BASE/QUOTE"
    side: Side
    qty: float  # base currency, > 0
    type: OrderType = "market"
    limit_price: float | None = None
    time_in_force: Literal["GTC", "IOC"] = "GTC"  # a limit order's: rest until done, or fill at once or never


@dataclass(frozen=True)
class Fill:
    """One execution (a trade) of an order. ``fee`` is in ``fee_currency`` (the quote).

    A fee the exchange charged in another currency (the base, BNB...) is converted to the
    quote for ``fee``; what was charged is kept in ``charged_fee`` ``charged_currency``,
    with the rate used (quote per unit of ``charged_currency``) in ``fee_rate_used``."""

    fill_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    fee_currency: str
    ts_ms: int
    charged_fee: float | None = None
    charged_currency: str | None = None
    fee_rate_used: float | None = None


@dataclass(frozen=True)
class MarketRules:
    """A market's order minimums and precision (ccxt ``load_markets``: ``limits.amount.min``,
    ``limits.cost.min``, ``precision.amount`` as a step). 0: no such rule."""

    amount_min: float = 0.0
    amount_step: float = 0.0
    cost_min: float = 0.0

    def round_qty(self, qty: float) -> float:
        """``qty`` down to the amount step (a hair of float noise is forgiven)."""
        if self.amount_step <= 0:
            return qty
        step = Decimal(repr(float(self.amount_step)))
        steps = int(Decimal(repr(float(qty))) / step + Decimal("1e-9"))  # as printed: 0.000125 / 1e-5 is 12.5
        return float(steps * step)

    def refusal(self, qty: float, price: float) -> str | None:
        """Why an order of ``qty`` at ``price`` would be refused by the market, or None."""
        if qty <= 0:
            return "below the market's amount step: nothing to order"
        if self.amount_min and qty < self.amount_min * (1 - 1e-9):
            return f"amount {qty:.10g} below the market's minimum {self.amount_min:.10g}"
        if self.cost_min and price > 0 and qty * price < self.cost_min * (1 - 1e-9):
            return f"value {qty * price:.8g} below the market's minimum order value {self.cost_min:.8g}"
        return None

    def dust_qty(self, price: float | None = None) -> float:
        """The largest quantity no order can be made of: the amount minimum or step, and (at
        ``price``) what the cost minimum allows."""
        by_cost = self.cost_min / price if (self.cost_min and price) else 0.0
        return max(self.amount_min, self.amount_step, by_cost)


@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker knows it."""

    client_order_id: str
    broker_order_id: str
    symbol: str
    side: str
    type: str
    qty: float
    limit_price: float | None
    status: OrderStatus
    filled_qty: float
    avg_price: float | None  # volume-weighted fill price; None until something filled
    fills: tuple[Fill, ...]
    created_ms: int

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class Broker:
    """What the kernel needs from an exchange. Implementations subclass it and must be
    thread-safe. The order methods are required; the hooks after them are optional, and
    their defaults here are what a broker without them means (the kernel calls them all)."""

    name: str | None = None

    def place_order(self, req: OrderRequest, *, ref_price: float, now_ms: int) -> BrokerOrder:
        """Place ``req``. Idempotent by ``req.client_order_id``: an id the broker already
        has returns that order unchanged, never a second one. ``ref_price`` is the price
        the kernel saw (the paper broker fills market orders at it, plus slippage).
        Raises ``OrderRejected`` for an order the broker refuses."""
        raise NotImplementedError

    def fetch_order(self, client_order_id: str) -> BrokerOrder | None:
        """The order with this client id, or None when the broker never saw it."""
        raise NotImplementedError

    def cancel_order(self, client_order_id: str) -> BrokerOrder:
        """Cancel an open order and return it; a final order is returned unchanged.
        Raises ``OrderNotFound`` for an unknown id."""
        raise NotImplementedError

    def open_orders(self, symbol: str | None = None) -> list[BrokerOrder]:
        """Orders still open (or partially filled), oldest first, optionally for one symbol."""
        raise NotImplementedError

    def balances(self) -> dict[str, float]:
        """Currency -> total (free + used by open orders)."""
        raise NotImplementedError

    def mark_price(self, symbol: str, price: float, now_ms: int) -> list[Fill]:
        """Feed a new price for ``symbol``; resting limit orders it crosses fill.
        Returns the new fills (a real exchange's broker returns [])."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources. Idempotent."""
        raise NotImplementedError

    # -- optional hooks: the defaults are what a broker without them means ------

    def use_ledger(self, ledger: Any) -> None:
        """Handed the kernel's ledger at startup (the ccxt broker looks up an order's
        symbol there). Default: not needed."""

    def mark_candle(self, symbol: str, candle: Any) -> list[Fill]:
        """A closed candle of ``symbol`` (a :class:`kernel.strategy_api.Candle`): a simulated
        exchange fills the resting limit orders it trades through. Default: nothing (a real
        exchange fills them itself; the kernel polls it)."""
        return []

    def on_tick(self) -> None:
        """Called once per tick: proof that the tick loop lives (the ccxt broker's dead
        man's switch). Default: nothing to do."""

    def market_rules(self, symbol: str) -> MarketRules:
        """The minimums and precision of ``symbol``'s market, checked before an order is sent.
        Default: none (every quantity is accepted)."""
        return MarketRules()

    def dust_qty(self, symbol: str) -> float:
        """The smallest quantity an order of ``symbol`` may have: a position below it is
        unsellable dust, which the kernel counts as flat. Default: from :meth:`market_rules`."""
        rules = self.market_rules(symbol)
        return max(rules.amount_min, rules.amount_step)

    def cached_balances(self) -> dict[str, float]:
        """Balances for status.json, which is built on the tick thread: a remote broker
        answers from a cache refreshed off that thread. Default: :meth:`balances`."""
        return self.balances()

    def describe(self) -> dict[str, Any]:
        """What this broker is, for status.json (never its keys)."""
        return {"name": self.name}


def split_symbol(symbol: str) -> tuple[str, str]:
    """``"BTC/USDT"`` -> ``("BTC", "USDT")``; ValueError for anything else."""
    if not isinstance(symbol, str):
        raise ValueError(f"symbol must be a string like 'BTC/USDT', not {symbol!r}")
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote or "/" in quote or base == quote:
        raise ValueError(f"symbol must look like 'BASE/QUOTE', not {symbol!r}")
    return base, quote
