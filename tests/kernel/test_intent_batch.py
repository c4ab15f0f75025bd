"""The group commit of intents (kernel/intent_batch.py) on a real ledger file.

Batches are made deterministic by holding the ledger's lock: the first intent's commit
waits for it, and every intent recorded meanwhile queues behind that commit, so the next
commit carries all of them. Transactions are counted from SQLite's own statement trace.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

import kernel.intent_batch as intent_batch
from kernel.intent_batch import Intent, IntentBatch
from kernel.ledger import Ledger
from tests.support.waiting import wait_until

T0 = 1_700_000_000_000


def _intent(i: int, **kw) -> Intent:
    base = dict(client_order_id=f"fs{i:032x}", slot=f"s{i}", symbol="BTC/USDT", candle_ms=T0, intent="entry",
                side="buy", qty=0.5 + i, ref_price=100.0)
    base.update(kw)
    return Intent(**base)


class Traced:
    """A ledger whose every SQL statement is written down (SQLite's trace callback)."""

    def __init__(self, path: Path) -> None:
        self.ledger = Ledger(path)
        self.statements: list[str] = []
        self.ledger._db.set_trace_callback(self.statements.append)
        self.batch = IntentBatch(self.ledger)

    def commits(self) -> int:
        return sum(1 for s in self.statements if s.strip().upper() == "COMMIT")

    def rows(self) -> list[tuple]:
        with sqlite3.connect(self.ledger.path) as other:  # another connection: only what is committed
            return other.execute("SELECT client_order_id, slot, qty, status FROM orders ORDER BY slot").fetchall()


@pytest.fixture
def traced(tmp_path: Path):
    t = Traced(tmp_path / "ledger.sqlite3")
    yield t
    t.ledger.close()


def _record_in_threads(batch: IntentBatch, intents: list[Intent]) -> tuple[list[threading.Thread], dict]:
    results: dict[str, object] = {}

    def run(it: Intent) -> None:
        try:
            results[it.client_order_id] = batch.record(it)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            results[it.client_order_id] = exc

    threads = [threading.Thread(target=run, args=(it,)) for it in intents]
    return threads, results


def _queue_behind_a_held_commit(t: Traced, first: Intent, rest: list[Intent]) -> tuple[list, dict]:
    """``first``'s commit waits for the ledger's lock (held here) while ``rest`` queue behind it."""
    threads, results = _record_in_threads(t.batch, [first, *rest])
    with t.ledger._lock:
        threads[0].start()
        wait_until(lambda: t.batch._committing, timeout=30, what="the first commit under way")
        for th in threads[1:]:
            th.start()
        wait_until(lambda: t.batch.queued() == len(rest), timeout=30, what="every other intent queued")
    for th in threads:
        th.join(30)
    return threads, results


def test_intents_queued_behind_a_commit_share_the_next_one(traced: Traced) -> None:
    intents = [_intent(i) for i in range(6)]
    before = traced.commits()
    _, results = _queue_behind_a_held_commit(traced, intents[0], intents[1:])
    assert all(results[i.client_order_id].inserted for i in intents)
    # Two transactions for six intents: the first alone, the five that waited for it together.
    assert traced.commits() - before == 2
    assert (traced.batch.commits, traced.batch.intents) == (2, 6)
    assert traced.rows() == [(i.client_order_id, i.slot, i.qty, "intent") for i in intents]
    batches = {id(results[i.client_order_id].batch) for i in intents[1:]}
    assert len(batches) == 1 and results[intents[1].client_order_id].batch.size == 5


def test_a_lone_intent_is_on_disk_when_record_returns_and_is_written_with_full_sync(traced: Traced) -> None:
    traced.ledger.record_cycles_and_slots([], [])  # nothing: no transaction at all
    member = traced.batch.record(_intent(1))
    assert member.inserted and member.batch is not None and member.batch.size == 1
    assert traced.rows() == [(_intent(1).client_order_id, "s1", 1.5, "intent")]
    assert traced.ledger._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    insert = next(i for i, s in enumerate(traced.statements) if s.lstrip().startswith("INSERT OR IGNORE INTO orders"))
    switches = [s for s in traced.statements[:insert] if "PRAGMA synchronous" in s]
    assert switches == [] or switches[-1].strip().endswith("FULL")


def test_a_client_id_recorded_already_is_not_recorded_again_nor_to_be_sent(traced: Traced) -> None:
    assert traced.batch.record(_intent(1)).inserted
    again = traced.batch.record(_intent(1, qty=9.0))
    assert again.inserted is False and again.batch is None
    assert traced.rows() == [(_intent(1).client_order_id, "s1", 1.5, "intent")]


def test_a_limit_order_s_row_is_in_the_same_commit_as_its_intent(traced: Traced) -> None:
    before = traced.commits()
    traced.batch.record(_intent(2, limit={"limit_price": 99.5, "time_in_force": "GTC", "expires_ms": T0 + 600_000,
                                          "timeframe": "5m"}))
    assert traced.commits() - before == 1
    with sqlite3.connect(traced.ledger.path) as other:
        assert other.execute("SELECT client_order_id, limit_price, time_in_force, expires_ms, timeframe"
                             " FROM limit_orders").fetchall() == [(_intent(2).client_order_id, 99.5, "GTC",
                                                                   T0 + 600_000, "5m")]


def test_a_failed_commit_fails_every_member_and_writes_none_of_them(traced: Traced) -> None:
    bad = _intent(3, qty={"not": "a number"})  # SQLite cannot bind it: the whole transaction rolls back
    first = _intent(0)
    _, results = _queue_behind_a_held_commit(traced, first, [_intent(1), bad, _intent(2)])
    assert results[first.client_order_id].inserted
    for it in (_intent(1), bad, _intent(2)):
        assert isinstance(results[it.client_order_id], sqlite3.ProgrammingError)
    assert [r[0] for r in traced.rows()] == [first.client_order_id]
    assert traced.batch.record(_intent(1)).inserted  # the batch is usable again


def test_crash_points_say_committed_once_per_commit_and_part_sent_while_members_are_unsent(
        traced: Traced, monkeypatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(intent_batch, "crash_point", seen.append)
    intents = [_intent(i) for i in range(4)]
    _, results = _queue_behind_a_held_commit(traced, intents[0], intents[1:])
    assert seen == ["intents_committed", "intents_committed"]
    members = [results[i.client_order_id] for i in intents[1:]]
    for m in members[:2]:
        m.sending()
    members[0].placed()  # the third member has not started: the batch is half sent
    assert seen[2:] == ["intent_batch_part_sent"]
    members[1].finished()  # refused by the gate after all: it is not awaited any more
    members[0].placed()  # said already: not said twice
    members[2].sending()
    members[2].placed()  # every member of its batch is on its way: nothing is unsent
    assert seen[2:] == ["intent_batch_part_sent"]
    first = results[intents[0].client_order_id]
    first.sending()
    first.placed()  # alone in its commit
    assert seen[2:] == ["intent_batch_part_sent"]


def test_what_follows_an_intent_is_committed_without_a_full_sync(traced: Traced) -> None:
    it = _intent(1)
    traced.batch.record(it)
    start = len(traced.statements)
    traced.ledger.mark_order(it.client_order_id, "sent", passed_ns=1)
    traced.ledger.record_fill(fill_id="f1", client_order_id=it.client_order_id, qty=it.qty, price=100.0, fee=0.1,
                              ts_ms=T0)
    after = [s.strip() for s in traced.statements[start:]]
    begins = [i for i, s in enumerate(after) if s.upper() == "BEGIN IMMEDIATE"]
    assert len(begins) == 2
    for b in begins:
        assert after[b - 1] == "PRAGMA synchronous=NORMAL"
    assert traced.rows() == [(it.client_order_id, "s1", 1.5, "filled")]
