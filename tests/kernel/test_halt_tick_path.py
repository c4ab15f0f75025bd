"""The halt's path on the tick thread (kernel/kernel.py tick_once, kernel/control_watch.py,
kernel/halt.py): from reading control.json to the halted status handed to its writer, the tick
thread runs no SQL and opens no file for writing; the halt's ledger record comes after.

Structural, never timed: every SQLite statement of the kernel's two databases (the ledger and
the paper exchange, through their trace callbacks), every new SQLite connection and every
file opened for writing (Python's audit hook) is recorded with the thread it ran on, beside
markers for the control poll, the gate closing and the status hand-over.
"""
from __future__ import annotations

import os
import sys
import threading

from kernel import control_client
from tests.kernel.kernel_driver import M5
from tests.support.status_reader import read_status
from tests.support.waiting import wait_until

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class Recorder:
    """(thread id, kind, detail) of each event while ``on``; audit hooks cannot be removed,
    so the one installed stays and records nothing once ``on`` is False."""

    _installed: "Recorder | None" = None

    def __init__(self) -> None:
        self.on = False
        self.events: list[tuple[int, str, str]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, detail: str) -> None:
        if self.on:
            with self._lock:
                self.events.append((threading.get_ident(), kind, detail))

    @classmethod
    def install(cls) -> "Recorder":
        rec = cls()
        if cls._installed is None:
            sys.addaudithook(lambda event, args: Recorder._installed and Recorder._installed._audit(event, args))
        Recorder._installed = rec
        return rec

    def _audit(self, event: str, args: tuple) -> None:
        if not self.on:
            return
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writes = (isinstance(flags, int) and flags & _WRITE_FLAGS) or (
                isinstance(mode, str) and any(c in mode for c in "wax+"))
            if writes:
                self.add("file-write", str(path))
        elif event == "sqlite3.connect":
            self.add("sql-connect", str(args[0] if args else ""))

    def on_thread(self, ident: int) -> list[tuple[str, str]]:
        return [(kind, detail) for t, kind, detail in self.events if t == ident]


def _wrap(obj, name: str, rec: Recorder, marker: str) -> None:
    orig = getattr(obj, name)

    def wrapped(*args, **kwargs):
        rec.add(marker, name)
        return orig(*args, **kwargs)

    setattr(obj, name, wrapped)


def test_the_halt_tick_runs_no_sql_and_writes_no_file_before_the_halt_acts_and_is_handed_to_status(driver):
    for i in range(3):
        driver.add_slot(f"flip-{i}", "flip")
    driver.advance(4 * M5)  # the flips have traded: orders, fills, positions in the ledger
    k = driver.kernel
    assert k.ledger.summary()["fills"] > 0
    rec = Recorder.install()
    k.ledger._db.set_trace_callback(lambda sql: rec.add("sql", sql))
    k.broker._conn.set_trace_callback(lambda sql: rec.add("sql", sql))
    _wrap(k.control, "poll", rec, "poll")
    _wrap(k.gate, "engage_halt", rec, "gate-closed")
    _wrap(k.status_writer, "publish", rec, "status-handed")
    snaps: list[dict] = []
    publish = k.status_writer.publish
    k.status_writer.publish = lambda snap, **kw: (snaps.append(snap), publish(snap, **kw))[1]
    control_client.halt(driver.state_dir, "structural", by="test")  # as kernelctl writes it
    try:
        rec.on = True
        k.tick_once()  # this thread is the tick thread
    finally:
        rec.on = False
        k.ledger._db.set_trace_callback(None)
        k.broker._conn.set_trace_callback(None)

    tick = rec.on_thread(threading.get_ident())
    kinds = [kind for kind, _ in tick]
    assert kinds.count("poll") == 1 and kinds.count("gate-closed") == 1 and "status-handed" in kinds
    poll, gate, handed = kinds.index("poll"), kinds.index("gate-closed"), kinds.index("status-handed")
    assert poll < gate < handed
    before = [e for e in tick[:handed] if e[0] in ("sql", "sql-connect", "file-write")]
    assert before == [], f"the tick thread touched a database or wrote a file before the halt was reported: {before}"
    # The recorder does see this thread's SQL: the halt's durable record comes right after.
    after = [detail for kind, detail in tick[handed:] if kind == "sql"]
    assert any(sql.startswith("INSERT INTO meta") and "VALUES('halt'" in sql for sql in after), after
    assert k.ledger.meta_get("halt")["engaged"] is True and k.ledger.meta_get("halt")["reason"] == "structural"
    # The halt's first status is a whole one, key for key (kernel.protocol.Status), and says halted.
    from kernel.protocol import Status
    assert list(snaps[0]) == list(Status.model_fields)
    assert Status.model_validate(snaps[0]).state == "halted" and snaps[0]["halt"]["reason"] == "structural"
    assert len(snaps[0]["slots"]) == 3
    st = wait_until(lambda: (s := read_status(driver.state_dir)) and s.get("state") == "halted" and s,
                    timeout=10, what="status.json halted")
    assert st["halt"]["reason"] == "structural"
    assert st["ledger"]["fills"] == k.ledger.summary()["fills"] and st["ledger"]["cash"] is not None


def test_a_halt_written_between_ticks_starts_a_tick_at_once(tmp_path, strategies):
    """With a ten-minute tick, the halt is still observed at once: the run loop looks at
    control.json while it waits (kernel.kernel.Kernel._idle) and ticks when it changes."""
    from tests.kernel.kernel_driver import make_driver

    d = make_driver(tmp_path, strategies, tick_ms=600_000)
    k = d.kernel
    runner = threading.Thread(target=k.run, name="run-loop", daemon=True)
    runner.start()
    try:
        wait_until(lambda: k.tick >= 1, timeout=30, what="the first tick")
        assert k.tick == 1 and not k.halt.engaged
        control_client.halt(d.state_dir, "between ticks", by="test")
        wait_until(lambda: k.halt.engaged, timeout=60, what="the halt, long before the next scheduled tick")
        assert k.halt.observed_tick == 2, "observed by the tick the write started, the second one"
        st = wait_until(lambda: (s := read_status(d.state_dir)) and s.get("state") == "halted" and s,
                        timeout=30, what="status.json halted")
        assert st["halt"]["reason"] == "between ticks"
    finally:
        k.stop()
        runner.join(30)
    assert not runner.is_alive() and k.run_state.stopped


def test_ticks_started_early_by_control_writes_leave_the_tick_schedule_alone(tmp_path, strategies):
    """Many control.json writes in a row each start a tick early; the scheduled ticks go on
    at their period after them (an early tick is not one taken from the schedule)."""
    from kernel.control import append_commands
    from kernel.protocol import Command
    from tests.kernel.kernel_driver import make_driver

    d = make_driver(tmp_path, strategies, tick_ms=1_000)
    k = d.kernel
    runner = threading.Thread(target=k.run, name="run-loop", daemon=True)
    runner.start()
    try:
        wait_until(lambda: k.tick >= 1, timeout=30, what="the first tick")
        for i in range(60):
            append_commands(d.state_dir, [Command(id=f"p{i}", action="pause")])
            n = k.tick
            wait_until(lambda: k.tick > n, timeout=30, what=f"the tick write {i} started", poll=0.001)
        done = k.tick
        # Had the 60 early ticks been taken from the schedule, the next one would be a minute away.
        wait_until(lambda: k.tick >= done + 3, timeout=30, what="three scheduled ticks after the writes")
    finally:
        k.stop()
        runner.join(30)
    assert not runner.is_alive()
