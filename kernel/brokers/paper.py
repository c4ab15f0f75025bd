"""A simulated spot exchange that remembers everything in its own SQLite file.

The file is "the exchange's memory", separate from the kernel's ledger: after a
crash the kernel reconciles its intents against it exactly as it would against
a real exchange. Every state change is one SQLite transaction (WAL,
synchronous=NORMAL), so a ``kill -9`` at any point leaves either all of a change
or none of it. NORMAL, not FULL: in WAL mode a commit is in the OS's hands when it
returns, which a killed process cannot undo; only a power cut can lose the newest
commits, and then the exchange simply never saw those orders, which the kernel's
reconciliation handles as it would for a real exchange (intent on disk, order unknown:
abandoned, never sent twice). It saves an fsync per order (docs/benchmarks.md, scale).

Rules (spot, long only):

- market orders fill at once and fully at ``ref_price`` (``fill_price="close"``: the signal
  candle's close) or at ``next_open(symbol, now_ms)`` (``fill_price="next_open"``: the next
  candle's open; rejected when there is none) moved against the taker by
  ``slippage_bps``; the fee is ``fee_rate`` x notional, in the quote currency;
- limit orders rest (``open``) and reserve what they need (quote for a buy,
  notional + fee; base for a sell) until :meth:`PaperBroker.mark_price` crosses
  them (buy: price <= limit, sell: price >= limit; they fill at the limit price) or
  :meth:`PaperBroker.mark_candle` gets a candle, opening at or after the order was placed,
  that trades through them (buy: low <= limit, sell: high >= limit); they fill whole at the
  limit, or at the candle's open when it gapped through (a better price), with the maker fee
  (``maker_fee_rate``, else ``fee_rate``). A limit order already marketable when placed
  (buy: the slipped price <= limit) fills at once like a market order, at the better of the
  two prices; an IOC one that is not is cancelled at once;
- with a markets table (``markets``: symbol -> :class:`kernel.brokers.MarketRules`, e.g.
  :data:`BINANCE_SPOT_MARKETS`) an order below the market's amount or value minimum, or off
  its amount step, is ``OrderRejected`` as the exchange would; without one every quantity
  is accepted;
- a buy needs free quote >= notional + fee, a sell needs free base >= qty, else
  ``OrderRejected`` and nothing changes. A sell that exceeds the free base by
  float noise only (<= 1e-9 relative) sells the free base instead;
- broker ids are ``P-<client order id>`` and fill ids ``P-<client order id>-F<k>``: derived
  from the kernel's (deterministic) client id, never from a counter, so two replays give the
  same ids whatever order their workers reach the exchange in; placing a client id that
  exists returns the stored order unchanged.

Balances are kept as exact decimals (TEXT) so that repeated fills never drift
from the sum of the fills they come from; the interface speaks floats.
"""
from __future__ import annotations

import math
import numbers
import sqlite3
import threading
from contextlib import contextmanager
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Callable, Iterator

from kernel.brokers import Broker, BrokerOrder, Fill, MarketRules, OrderRequest, split_symbol
from kernel.errors import OperationalError, OrderNotFound, OrderRejected, TemporaryError

__all__ = ["PaperBroker", "SCHEMA_VERSION", "BINANCE_SPOT_MARKETS"]

# Binance spot's LOT_SIZE (step, minimum) and NOTIONAL minimum for the pairs the kernel trades
# (GET /api/v3/exchangeInfo, as recorded in tests/fixtures/ccxt/binance/exchangeInfo.json).
BINANCE_SPOT_MARKETS: dict[str, MarketRules] = {
    f"{base}/USDT": MarketRules(amount_min=step, amount_step=step, cost_min=5.0)
    for base, step in (("BTC", 1e-5), ("ETH", 1e-4), ("SOL", 1e-3), ("XRP", 0.1), ("ADA", 0.1), ("DOGE", 1.0),
                       ("AVAX", 0.01), ("LINK", 0.01))
}

SCHEMA_VERSION = 1
_OPEN = ("open", "partially_filled")
_DUST = Decimal("1e-9")  # a sell may exceed the free base by this much (relative): float noise

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS balances (
        currency TEXT PRIMARY KEY,
        total TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS orders (
        seq INTEGER PRIMARY KEY,
        client_order_id TEXT NOT NULL UNIQUE,
        broker_order_id TEXT NOT NULL UNIQUE,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        type TEXT NOT NULL,
        qty REAL NOT NULL,
        limit_price REAL,
        status TEXT NOT NULL,
        filled_qty REAL NOT NULL,
        avg_price REAL,
        fee_rate REAL NOT NULL,
        reserved_currency TEXT,
        reserved TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, symbol, seq)",
    """CREATE TABLE IF NOT EXISTS fills (
        seq INTEGER PRIMARY KEY,
        fill_id TEXT NOT NULL UNIQUE,
        client_order_id TEXT NOT NULL REFERENCES orders (client_order_id),
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        qty REAL NOT NULL,
        price REAL NOT NULL,
        fee REAL NOT NULL,
        fee_currency TEXT NOT NULL,
        ts_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS fills_by_order ON fills (client_order_id, seq)",
)


def _dec(x: float) -> Decimal:
    """The decimal a float prints as (0.1 -> Decimal('0.1')), so 0.3 - 0.1 - 0.1 - 0.1 == 0."""
    return Decimal(repr(float(x)))


def _real(x: object) -> float | None:
    """``x`` as a finite float, or None if it is not a finite real number."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _buy_cost(qty: float, price: float, fee_rate: float) -> tuple[float, Decimal]:
    """(fee, notional + fee) of buying ``qty`` at ``price``; reservation and fill use the same numbers."""
    fee = fee_rate * qty * price
    return fee, _dec(qty) * _dec(price) + _dec(fee)


class PaperBroker(Broker):
    """A :class:`kernel.brokers.Broker` that simulates a spot exchange in a SQLite file.

    ``path=None`` keeps the exchange in memory (gone on close). ``cash`` seeds the
    quote balance only when the file is new: a reopened exchange remembers its own.
    ``crash_hook(point)`` is called by ``place_order`` at ``"before_commit"`` and
    ``"after_commit"`` of a new order, for crash-injection tests.
    """

    name = "paper"

    def __init__(
        self,
        path: Path | str | None,
        *,
        cash: float = 10_000.0,
        quote: str = "USDT",
        fee_rate: float = 0.001,
        slippage_bps: float = 5.0,
        fill_price: str = "close",
        next_open: Callable[[str, int], float | None] | None = None,
        crash_hook: Callable[[str], None] | None = None,
        markets: dict[str, MarketRules] | None = None,
        maker_fee_rate: float | None = None,
    ) -> None:
        if not isinstance(quote, str) or not quote or "/" in quote:
            raise OperationalError(f"paper broker: bad quote currency {quote!r}")
        cash_f, fee_f, slip_f = _real(cash), _real(fee_rate), _real(slippage_bps)
        if cash_f is None or cash_f < 0:
            raise OperationalError(f"paper broker: cash must be a finite number >= 0, not {cash!r}")
        if fee_f is None or not 0 <= fee_f < 1:
            raise OperationalError(f"paper broker: fee_rate must be in [0, 1), not {fee_rate!r}")
        if slip_f is None or not 0 <= slip_f < 10_000:
            raise OperationalError(f"paper broker: slippage_bps must be in [0, 10000), not {slippage_bps!r}")
        self.path = Path(path) if path is not None else None
        self.quote = quote
        self.fee_rate = fee_f
        maker_f = fee_f if maker_fee_rate is None else _real(maker_fee_rate)
        if maker_f is None or not 0 <= maker_f < 1:
            raise OperationalError(f"paper broker: maker_fee_rate must be in [0, 1), not {maker_fee_rate!r}")
        self.maker_fee_rate = maker_f
        self.slippage_bps = slip_f
        if fill_price not in ("close", "next_open") or (fill_price == "next_open" and next_open is None):
            raise OperationalError(f"paper broker: fill_price must be 'close' or 'next_open' (with a next_open "
                                   f"lookup), not {fill_price!r}")
        self.fill_price = fill_price
        self._next_open = next_open
        self._crash_hook = crash_hook
        self.markets = dict(markets or {})
        self._lock = threading.Lock()
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path) if self.path is not None else ":memory:",
            isolation_level=None,
            check_same_thread=False,
            timeout=10.0,
        )
        try:
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # why: the module's docstring
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._init_schema(cash_f)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def __repr__(self) -> str:
        return f"PaperBroker({str(self.path) if self.path else ':memory:'!r}, quote={self.quote!r})"

    def __enter__(self) -> "PaperBroker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Broker interface -------------------------------------------------

    def place_order(self, req: OrderRequest, *, ref_price: float, now_ms: int) -> BrokerOrder:
        cid = req.client_order_id
        if not isinstance(cid, str) or not cid:
            raise OrderRejected(f"invalid order: client_order_id must be a non-empty string, not {cid!r}")
        now_ms = int(now_ms)
        with self._tx() as c:
            row = self._order_row(c, cid)
            if row is not None:  # a retry: the exchange already has it
                return self._order_from_row(c, row)
            order = self._place_new(c, req, ref_price, now_ms)
            self._hook("before_commit")
        self._hook("after_commit")
        return order

    def fetch_order(self, client_order_id: str) -> BrokerOrder | None:
        with self._tx(write=False) as c:
            row = self._order_row(c, client_order_id)
            return None if row is None else self._order_from_row(c, row)

    def cancel_order(self, client_order_id: str) -> BrokerOrder:
        with self._tx() as c:
            row = self._order_row(c, client_order_id)
            if row is None:
                raise OrderNotFound(f"paper broker: no order with client id {client_order_id!r}")
            if row["status"] in _OPEN:  # releases its reservation: only open orders reserve
                c.execute(
                    "UPDATE orders SET status = 'cancelled' WHERE seq = ?",
                    (row["seq"],),
                )
                row = self._order_row(c, client_order_id)
            return self._order_from_row(c, row)

    def open_orders(self, symbol: str | None = None) -> list[BrokerOrder]:
        sql = "SELECT * FROM orders WHERE status IN (?, ?)"
        args: tuple = _OPEN
        if symbol is not None:
            sql += " AND symbol = ?"
            args += (symbol,)
        with self._tx(write=False) as c:
            rows = c.execute(sql + " ORDER BY seq", args).fetchall()
            return [self._order_from_row(c, r) for r in rows]

    def balances(self) -> dict[str, float]:
        with self._tx(write=False) as c:
            rows = c.execute("SELECT currency, total FROM balances ORDER BY currency").fetchall()
            return {r["currency"]: float(Decimal(r["total"])) for r in rows}

    def mark_price(self, symbol: str, price: float, now_ms: int) -> list[Fill]:
        """Fill the resting limit orders on ``symbol`` that ``price`` crosses, oldest first.

        A price that is not a finite positive number crosses nothing."""
        p = _real(price)
        if p is None or p <= 0:
            return []
        now_ms = int(now_ms)
        fills: list[Fill] = []
        with self._tx() as c:
            rows = c.execute(
                "SELECT * FROM orders WHERE status IN (?, ?) AND symbol = ? AND type = 'limit' ORDER BY seq",
                (*_OPEN, symbol),
            ).fetchall()
            for row in rows:
                limit = row["limit_price"]
                if (row["side"] == "buy" and p <= limit) or (row["side"] == "sell" and p >= limit):
                    fills.append(self._fill(c, row, limit, now_ms))
        return fills

    def mark_candle(self, symbol: str, candle: object) -> list[Fill]:
        """Fill the resting limit orders on ``symbol`` that ``candle`` trades through, oldest
        first: only orders placed at or before the candle opened (a later candle's)."""
        ts, o, h, lo = (getattr(candle, k, None) for k in ("ts", "open", "high", "low"))
        if not isinstance(ts, int) or any(_real(x) is None or x <= 0 for x in (o, h, lo)):
            return []
        fills: list[Fill] = []
        with self._tx() as c:
            rows = c.execute(
                "SELECT * FROM orders WHERE status IN (?, ?) AND symbol = ? AND type = 'limit' AND created_ms <= ?"
                " ORDER BY seq", (*_OPEN, symbol, ts),
            ).fetchall()
            for row in rows:
                limit = row["limit_price"]
                if row["side"] == "buy" and lo <= limit:
                    fills.append(self._fill(c, row, min(limit, o), ts))
                elif row["side"] == "sell" and h >= limit:
                    fills.append(self._fill(c, row, max(limit, o), ts))
        return fills

    def market_rules(self, symbol: str) -> MarketRules:
        return self.markets.get(symbol, MarketRules())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- internals ------------------------------------------------------------

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the broker's lock; commit on success, roll back on any exception."""
        with self._lock:
            c = self._conn
            if c is None:
                raise OperationalError("paper broker is closed")
            try:
                c.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.OperationalError as e:
                raise self._translate(e) from e
            try:
                with localcontext() as dctx:
                    dctx.prec = 60  # products of two 17-digit floats stay exact
                    yield c
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            try:
                c.execute("COMMIT")
            except sqlite3.OperationalError as e:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise self._translate(e) from e

    @staticmethod
    def _translate(e: sqlite3.OperationalError) -> Exception:
        msg = str(e).lower()
        if "locked" in msg or "busy" in msg:
            return TemporaryError(f"paper exchange busy: {e}")
        return e

    def _hook(self, point: str) -> None:
        if self._crash_hook is not None:
            self._crash_hook(point)

    def _init_schema(self, cash: float) -> None:
        with self._tx() as c:
            for stmt in _SCHEMA:
                c.execute(stmt)
            meta = {r["key"]: r["value"] for r in c.execute("SELECT key, value FROM meta")}
            if not meta:
                c.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("schema", str(SCHEMA_VERSION)), ("quote", self.quote), ("initial_cash", repr(cash))],
                )
                c.execute("INSERT INTO balances (currency, total) VALUES (?, ?)", (self.quote, str(_dec(cash))))
                return
            if meta.get("schema") != str(SCHEMA_VERSION):
                raise OperationalError(
                    f"paper exchange {self.path}: schema {meta.get('schema')!r}, expected {SCHEMA_VERSION}"
                )
            if meta.get("quote") != self.quote:
                raise OperationalError(
                    f"paper exchange {self.path} trades against {meta.get('quote')!r}, not {self.quote!r}"
                )

    def _place_new(self, c: sqlite3.Connection, req: OrderRequest, ref_price: float, now_ms: int) -> BrokerOrder:
        side, otype = req.side, req.type
        if side not in ("buy", "sell"):
            raise OrderRejected(f"invalid order: side must be 'buy' or 'sell', not {side!r}")
        if otype not in ("market", "limit"):
            raise OrderRejected(f"invalid order: type must be 'market' or 'limit', not {otype!r}")
        qty = _real(req.qty)
        if qty is None or qty <= 0:
            raise OrderRejected(f"invalid order: qty must be a finite number > 0, not {req.qty!r}")
        try:
            base, quote = split_symbol(req.symbol)
        except ValueError as e:
            raise OrderRejected(f"invalid order: {e}") from None
        if quote != self.quote:
            raise OrderRejected(f"invalid order: {req.symbol} is not quoted in {self.quote}")
        if otype == "market":
            if req.limit_price is not None:
                raise OrderRejected("invalid order: a market order takes no limit_price")
            ref = _real(ref_price)
            if self.fill_price == "next_open" and self._next_open is not None:
                ref = _real(self._next_open(req.symbol, now_ms))
                if ref is None or ref <= 0:
                    raise OrderRejected(f"no next candle of {req.symbol} after {now_ms} to fill at (--fill-price next-open)")
            if ref is None or ref <= 0:
                raise OrderRejected(f"invalid order: ref_price must be a finite number > 0, not {ref_price!r}")
            limit = None
        else:
            limit = _real(req.limit_price)
            if limit is None or limit <= 0:
                raise OrderRejected(f"invalid order: limit_price must be a finite number > 0, not {req.limit_price!r}")

        fee_rate = self.fee_rate
        slip = self.slippage_bps / 1e4
        taker = None if limit is None else _real(ref_price)
        if taker is not None and taker <= 0:
            taker = None
        if taker is not None:
            taker = taker * (1 + slip) if side == "buy" else taker * (1 - slip)
            if (side == "buy" and taker > limit) or (side == "sell" and taker < limit):
                taker = None  # not marketable: it rests
        rests = limit is not None and taker is None  # an IOC that would rest is cancelled at once
        if rests:
            price, fee_rate = limit, self.maker_fee_rate
        elif limit is not None:
            price = taker
        else:  # slippage always goes against the taker
            price = ref * (1 + slip) if side == "buy" else ref * (1 - slip)
        rules = self.markets.get(req.symbol)
        if rules is not None:
            refusal = rules.refusal(qty, price)
            if refusal is None and rules.round_qty(qty) < qty * (1 - 1e-9):
                refusal = f"amount {qty:.10g} is not a multiple of the market's step {rules.amount_step:.10g}"
            if refusal is not None:
                raise OrderRejected(f"invalid order: {refusal}")

        # What the order needs, checked against what is free (total minus open orders' reservations).
        if side == "buy":
            fee, cost = _buy_cost(qty, price, fee_rate)
            free = self._free(c, quote)
            if cost > free:
                raise OrderRejected(
                    f"insufficient funds: buying {qty:g} {base} at {price:g} needs {float(cost):.8f} {quote}, "
                    f"{float(free):.8f} free"
                )
            reserved_currency, reserved = quote, cost
        else:
            free = self._free(c, base)
            need = _dec(qty)
            if need > free:
                if free <= 0 or need - free > need * _DUST:
                    raise OrderRejected(
                        f"insufficient funds: selling {qty:g} {base} needs {qty:g} {base}, {float(free):g} free"
                    )
                need = free  # float noise: sell what there is
            reserved_currency, reserved = base, need

        seq = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM orders").fetchone()[0]
        c.execute(
            """INSERT INTO orders (seq, client_order_id, broker_order_id, symbol, side, type, qty,
                   limit_price, status, filled_qty, avg_price, fee_rate, reserved_currency, reserved,
                   created_ms, updated_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', 0.0, NULL, ?, ?, ?, ?, ?)""",
            (seq, req.client_order_id, f"P-{req.client_order_id}", req.symbol, side, otype, qty, limit, fee_rate,
             reserved_currency, str(reserved), now_ms, now_ms),
        )
        row = self._order_row(c, req.client_order_id)
        if rests and req.time_in_force == "IOC":
            c.execute("UPDATE orders SET status = 'cancelled' WHERE seq = ?", (seq,))
            row = self._order_row(c, req.client_order_id)
        elif not rests:
            self._fill(c, row, price, now_ms)
            row = self._order_row(c, req.client_order_id)
        return self._order_from_row(c, row)

    def _fill(self, c: sqlite3.Connection, row: sqlite3.Row, price: float, now_ms: int) -> Fill:
        """Fill the whole open order ``row`` at ``price``: balances, fill row, order row."""
        base, quote = split_symbol(row["symbol"])
        if row["side"] == "buy":
            qty = row["qty"]
            fee, cost = _buy_cost(qty, price, row["fee_rate"])
            self._credit(c, quote, -cost)
            self._credit(c, base, _dec(qty))
        else:
            qty = float(Decimal(row["reserved"]))  # the qty reserved (the request, or the free base)
            fee = row["fee_rate"] * qty * price
            self._credit(c, base, -_dec(qty))
            self._credit(c, quote, _dec(qty) * _dec(price) - _dec(fee))
        n = c.execute("SELECT COUNT(*) FROM fills WHERE client_order_id = ?", (row["client_order_id"],)).fetchone()[0]
        fill = Fill(
            fill_id=f"{row['broker_order_id']}-F{n + 1}",
            client_order_id=row["client_order_id"],
            symbol=row["symbol"],
            side=row["side"],
            qty=qty,
            price=price,
            fee=fee,
            fee_currency=quote,
            ts_ms=now_ms,
        )
        c.execute(
            """INSERT INTO fills (fill_id, client_order_id, symbol, side, qty, price, fee, fee_currency, ts_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (fill.fill_id, fill.client_order_id, fill.symbol, fill.side, fill.qty, fill.price, fill.fee,
             fill.fee_currency, fill.ts_ms),
        )
        c.execute(
            "UPDATE orders SET status = 'filled', filled_qty = ?, avg_price = ?, updated_ms = ? WHERE seq = ?",
            (qty, price, now_ms, row["seq"]),
        )
        return fill

    def _credit(self, c: sqlite3.Connection, currency: str, delta: Decimal) -> None:
        row = c.execute("SELECT total FROM balances WHERE currency = ?", (currency,)).fetchone()
        total = (Decimal(row["total"]) if row else Decimal(0)) + delta
        if total < 0:
            if total < -abs(delta) * _DUST:  # more than noise: a bug, never a negative balance
                raise OperationalError(f"paper exchange: {currency} balance would go negative ({total})")
            total = Decimal(0)
        c.execute(
            "INSERT INTO balances (currency, total) VALUES (?, ?) "
            "ON CONFLICT (currency) DO UPDATE SET total = excluded.total",
            (currency, str(total)),
        )

    def _free(self, c: sqlite3.Connection, currency: str) -> Decimal:
        row = c.execute("SELECT total FROM balances WHERE currency = ?", (currency,)).fetchone()
        total = Decimal(row["total"]) if row else Decimal(0)
        reserved = c.execute(
            "SELECT reserved FROM orders WHERE status IN (?, ?) AND reserved_currency = ?",
            (*_OPEN, currency),
        ).fetchall()
        return total - sum((Decimal(r["reserved"]) for r in reserved), Decimal(0))

    @staticmethod
    def _order_row(c: sqlite3.Connection, client_order_id: str) -> sqlite3.Row | None:
        return c.execute("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()

    @staticmethod
    def _order_from_row(c: sqlite3.Connection, row: sqlite3.Row) -> BrokerOrder:
        fills = tuple(
            Fill(
                fill_id=f["fill_id"],
                client_order_id=f["client_order_id"],
                symbol=f["symbol"],
                side=f["side"],
                qty=f["qty"],
                price=f["price"],
                fee=f["fee"],
                fee_currency=f["fee_currency"],
                ts_ms=f["ts_ms"],
            )
            for f in c.execute("SELECT * FROM fills WHERE client_order_id = ? ORDER BY seq", (row["client_order_id"],))
        )
        return BrokerOrder(
            client_order_id=row["client_order_id"],
            broker_order_id=row["broker_order_id"],
            symbol=row["symbol"],
            side=row["side"],
            type=row["type"],
            qty=row["qty"],
            limit_price=row["limit_price"],
            status=row["status"],
            filled_qty=row["filled_qty"],
            avg_price=row["avg_price"],
            fills=fills,
            created_ms=row["created_ms"],
        )
