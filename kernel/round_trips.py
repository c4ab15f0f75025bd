"""One definition of a round trip and its P&L, for the ledger, status.json, kernelctl and the console.

A slot's book moves with each fill (:func:`apply_fill`):

- a buy adds ``qty`` at ``price`` to the position's cost (fees are not part of the cost) and
  its fee to the realised P&L at once: the entry fee is a cost of the round trip;
- a sell takes ``qty`` off at the position's average price: its P&L is
  ``qty x (price - average) - fee``;
- a round trip begins with the first buy of a flat book and ends with the sell that leaves
  it flat: nothing left, or (:func:`settle`, once the sell order is final) at most ``dust``,
  the quantity below which the market accepts no order (its amount minimum, lot step or cost
  minimum at the price). What is left below it is *dust*: moved out of the position, with its
  cost, into ``dust_qty`` and ``dust_cost`` (reported on their own), never blended into the
  next entry's average price;
- the round trip's P&L is the change of the realised P&L from its first buy to its last
  sell: every entry fee and every exit fee included. It is a win when that is > 0.

Totals: the realised P&L of a slot is the sum of its closed round trips' P&L plus the entry
fees of the round trip still open; ``trades`` and ``wins`` count closed round trips.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

__all__ = ["EPS", "Book", "apply_fill", "settle", "replay"]

EPS = 1e-12  # a quantity at or below this is nothing


@dataclass(frozen=True, slots=True)
class Book:
    qty: float = 0.0  # the tradeable position (dust excluded)
    cost: float = 0.0  # what the position cost, at fill prices (fees excluded)
    realized_pnl: float = 0.0  # fees included
    fees: float = 0.0
    trades: int = 0  # closed round trips
    wins: int = 0  # closed round trips with P&L > 0
    round_start_pnl: float = 0.0  # realized_pnl when the open round trip began
    dust_qty: float = 0.0  # left below the market's minimum: not tradeable, not in the average
    dust_cost: float = 0.0


def apply_fill(book: Book, *, side: str, qty: float, price: float,
               fee: float) -> tuple[Book, float | None, float | None]:
    """The book after one fill; the fill's P&L (a sell's, None for a buy); and the P&L of
    the round trip this fill closes (None unless it leaves nothing: see also :func:`settle`)."""
    b = book
    if side == "buy":
        if b.qty <= EPS:  # a new round trip
            b = replace(b, qty=0.0, cost=0.0, round_start_pnl=b.realized_pnl)
        b = replace(b, qty=b.qty + qty, cost=b.cost + qty * price, realized_pnl=b.realized_pnl - fee,
                    fees=b.fees + fee)
        return b, None, None
    if qty > b.qty + EPS and b.dust_qty > 0:  # selling more than the position: the dust goes too
        b = replace(b, qty=b.qty + b.dust_qty, cost=b.cost + b.dust_cost, dust_qty=0.0, dust_cost=0.0)
    was_open = b.qty > EPS
    avg = b.cost / b.qty if b.qty > EPS else price
    pnl = qty * (price - avg) - fee
    left = b.qty - qty
    b = replace(b, qty=left, cost=b.cost - qty * avg, realized_pnl=b.realized_pnl + pnl, fees=b.fees + fee)
    if left > EPS:
        return b, pnl, None
    b = replace(b, qty=0.0, cost=0.0)
    if not was_open:
        return b, pnl, None
    b, round_pnl = _close(b)
    return b, pnl, round_pnl


def settle(book: Book, dust: float) -> tuple[Book, float | None]:
    """After a sell order is final: a position left at most ``dust`` (the largest quantity the
    market takes no order of) is dust, and the round trip is closed; returns the book and
    that round trip's P&L (None when nothing closed)."""
    if not (EPS < book.qty <= dust):
        return book, None
    moved = replace(book, qty=0.0, cost=0.0, dust_qty=book.dust_qty + book.qty,
                    dust_cost=book.dust_cost + book.cost)
    return _close(moved)


def _close(b: Book) -> tuple[Book, float]:
    round_pnl = b.realized_pnl - b.round_start_pnl
    return replace(b, trades=b.trades + 1, wins=b.wins + (1 if round_pnl > 0 else 0)), round_pnl


def replay(fills: Iterable[dict], *, dust: float = 0.0) -> tuple[Book, list[float]]:
    """A book from nothing through ``fills`` (dicts with side, qty, price, fee; in order; a
    sell is taken as its order's last fill), and the P&L of each round trip closed, in order."""
    book, rounds = Book(), []
    for f in fills:
        book, _, rt = apply_fill(book, side=f["side"], qty=f["qty"], price=f["price"], fee=f["fee"])
        if rt is None and f["side"] == "sell":
            book, rt = settle(book, dust)
        if rt is not None:
            rounds.append(rt)
    return book, rounds
