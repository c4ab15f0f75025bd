"""Group commit of order intents: the intents that reach the ledger together share one fsync.

Intent before send stays exact: an order is sent only after the transaction holding its
intent has committed with ``synchronous=FULL``. What changes is how many intents one fsync
carries. The cycles of one candle close run side by side on the workers; each one that
decides an order queues its intent here and waits. One of the waiting workers (the leader)
takes every intent queued at that moment and writes them in one ``BEGIN IMMEDIATE`` …
``COMMIT``; the intents that arrive while that commit is on its way to the disk form the
next batch. So a burst of N orders costs about N / workers fsyncs instead of N, with no
timer: a lone intent is committed at once, never held back waiting for company.

After the commit every member sends its own order from its own worker (a broker's round
trip is not serialised). A ``kill -9`` between the commit and the sends (crash point
``intents_committed``) or in the middle of them (``intent_batch_part_sent``) leaves intents
whose orders the broker may or may not have: startup reconciliation looks each one up by
its client id, exactly as for a single intent.

Only the intent needs ``synchronous=FULL``. What follows it in the ledger (the "sent" mark,
fills, the final status: ``Ledger.mark_order``, ``Ledger.record_fill``) is committed with
``synchronous=NORMAL``. In WAL mode such a commit survives a ``kill -9`` as a FULL one does
(it is in the WAL file, in the OS's hands); a power cut may lose the last of them, and only
as a suffix (the WAL is replayed as a prefix, and the next FULL commit, the next batch of
intents, syncs everything before it). Whatever is lost that way is an order whose intent is
on disk and whose ledger status is not final: the next start's reconciliation looks it up at
the broker by its client id and books its fills, each once (fills are keyed by their id).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .crash_points import crash_point

__all__ = ["Intent", "IntentBatch", "Membership"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Intent:
    client_order_id: str
    slot: str
    symbol: str
    candle_ms: int | None
    intent: str
    side: str
    qty: float
    ref_price: float | None
    command_id: str | None = None
    limit: dict[str, Any] | None = None  # limit_price, time_in_force, expires_ms, timeframe


class _Batch:
    """One commit's members; counts those whose order has not started on its way to the broker."""

    __slots__ = ("size", "unstarted", "lock")

    def __init__(self, size: int) -> None:
        self.size = size
        self.unstarted = size
        self.lock = threading.Lock()


@dataclass(slots=True)
class Membership:
    """One intent's place in a commit: whether it was new, and its batch."""
    intent: Intent
    inserted: bool = False
    error: BaseException | None = None
    done: bool = False
    batch: _Batch | None = field(default=None, repr=False)
    _started: bool = False
    _placed: bool = False

    def sending(self) -> None:
        """This member's order is about to go to the broker (or will never go: ``finished``).
        Under the batch's lock: a crash at ``intent_batch_part_sent`` holds it, so an order
        counted unstarted there cannot reach the broker before the kill lands."""
        if self.batch is None:
            return
        with self.batch.lock:
            if not self._started:
                self._started = True
                self.batch.unstarted -= 1

    def placed(self) -> None:
        """This member's order is at the broker. If another of its commit has not started on
        its way yet, the batch is half sent: crash point ``intent_batch_part_sent``."""
        if self.batch is None or self._placed:
            return
        self._placed = True
        with self.batch.lock:
            if self.batch.unstarted > 0:
                crash_point("intent_batch_part_sent")

    def finished(self) -> None:
        """This member's order is placed, refused, rejected or in doubt: nothing more to send."""
        self.sending()


class IntentBatch:
    """The group commit in front of the ledger's ``orders`` (and ``limit_orders``) inserts."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self._cond = threading.Condition()
        self._queue: list[Membership] = []
        self._committing = False
        self.commits = 0  # transactions written (for tests and the bench: intents / commits)
        self.intents = 0

    def queued(self) -> int:
        """Intents waiting for the next commit (one is on its way to the disk meanwhile)."""
        with self._cond:
            return len(self._queue)

    def record(self, intent: Intent) -> Membership:
        """Durably record ``intent`` (with its limit row); returns once its commit is on disk.
        ``inserted`` is False when that client id was recorded already: do not send it again."""
        member = Membership(intent)
        with self._cond:
            self._queue.append(member)
            while not member.done:
                if self._committing:
                    self._cond.wait()
                    continue
                batch, self._queue = self._queue, []
                self._committing = True
                self._cond.release()
                try:
                    self._commit(batch)
                finally:
                    self._cond.acquire()
                    self._committing = False
                    self._cond.notify_all()
        if member.error is not None:
            raise member.error
        return member

    def _commit(self, members: list[Membership]) -> None:
        error: BaseException | None = None
        inserted: list[bool] = []
        try:
            inserted = self._write([m.intent for m in members])
        except BaseException as exc:  # noqa: BLE001 - every member of the rolled-back commit gets it
            error = exc
        batch = _Batch(sum(inserted)) if error is None else None
        if error is None:
            self.commits += 1
            self.intents += len(members)
            crash_point("intents_committed")
        for i, m in enumerate(members):
            m.error = error
            if error is None:
                m.inserted = inserted[i]
                m.batch = batch if inserted[i] else None
            m.done = True

    def _write(self, intents: list[Intent]) -> list[bool]:
        """One transaction, ``synchronous=FULL``: each intent inserted unless its client id is known."""
        now = _now_ms()
        out: list[bool] = []
        with self._ledger._tx() as db:
            for it in intents:
                cur = db.execute(
                    "INSERT OR IGNORE INTO orders(client_order_id, slot, symbol, candle_ms, intent, side,"
                    " qty, ref_price, status, command_id, created_ms, updated_ms)"
                    " VALUES(?,?,?,?,?,?,?,?,'intent',?,?,?)",
                    (it.client_order_id, it.slot, it.symbol, it.candle_ms, it.intent, it.side, it.qty,
                     it.ref_price, it.command_id, now, now),
                )
                new = cur.rowcount == 1
                out.append(new)
                if new and it.limit is not None:
                    lim = it.limit
                    db.execute(
                        "INSERT OR IGNORE INTO limit_orders(client_order_id, limit_price, time_in_force,"
                        " expires_ms, timeframe) VALUES(?,?,?,?,?)",
                        (it.client_order_id, lim["limit_price"], lim["time_in_force"], lim.get("expires_ms"),
                         lim.get("timeframe")),
                    )
        return out
