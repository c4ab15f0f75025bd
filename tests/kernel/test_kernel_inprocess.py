"""The Kernel built in-process on a ManualClock and driven with tick_once(): cycles at
candle closes, missed accounting, commands exactly once across a restart, halt and
release, reloads (good and broken), runtime faults and abandoned cycles.

Cycles still run on the kernel's worker threads (never on the tick thread), so the
helpers below tick until the workers are done instead of sleeping.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from kernel.brokers.paper import PaperBroker
from kernel.clock import ManualClock
from kernel.control import append_commands, atomic_write_json, clear_halt_and_release
from kernel.feeds.synthetic import SyntheticFeed
from kernel.kernel import Kernel, KernelOptions
from kernel.protocol import Command

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
M5 = 300_000
M15 = 900_000

FLIP = '''\
"""Enters when flat, exits when holding: an order every cycle."""
import time

from kernel.strategy_api import Context, Decision, Field, StrategyParams


class Params(StrategyParams):
    sleep_ms: int = Field(0, ge=0)


def warmup(params):
    return 3


def evaluate(ctx: Context) -> Decision:
    if ctx.params.sleep_ms:
        time.sleep(ctx.params.sleep_ms / 1000)
    if ctx.position > 0:
        return Decision.exit("flip exit")
    if ctx.entries_allowed:
        return Decision.enter("flip enter")
    return Decision.hold("flip: entries not allowed")
'''

TAGGED = '''\
from kernel.strategy_api import Context, Decision, StrategyParams

from . import tag_helper as helper

TAG = "{tag}"


class Params(StrategyParams):
    pass


def warmup(params):
    return 3


def evaluate(ctx: Context) -> Decision:
    return Decision.hold(f"{{TAG}}|{{helper.TAG}}")
'''

COUNTER = '''\
"""Counts its cycles in ctx.state; misbehaves from cycle {after} on: {how}."""
import time

from kernel.strategy_api import Context, Decision, StrategyParams

_SEEN = []


class Params(StrategyParams):
    pass


def warmup(params):
    return 3


def evaluate(ctx: Context) -> Decision:
    n = int(ctx.state.get("n", 0)) + 1
    if n >= {after}:
        {how}
    if ctx.position > 0:
        return Decision.exit(f"n={{n}}", {{"n": n}})
    return Decision.enter(f"n={{n}}", {{"n": n}})
'''


@pytest.fixture
def strategies(tmp_path: Path) -> Path:
    d = tmp_path / "strategies"
    d.mkdir()
    (d / "__init__.py").write_text("")
    (d / "flip.py").write_text(FLIP)
    (d / "tagged.py").write_text(TAGGED.format(tag="v1"))
    (d / "tag_helper.py").write_text('TAG = "v1"\n')
    (d / "raiser.py").write_text(COUNTER.format(after=3, how='raise RuntimeError(f"bad cycle {n}")'))
    (d / "sleeper.py").write_text(COUNTER.format(after=2, how="time.sleep(0.8)"))
    (d / "hoarder.py").write_text(COUNTER.format(after=3, how="_SEEN.append(n)"))
    return d


class Driver:
    """A kernel on a ManualClock, and the loop a test drives it with."""

    def __init__(self, state_dir: Path, strategies: Path, **options) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.strategies = strategies
        self.options = options
        self.clock = ManualClock(T0 + 1_000)
        self.kernel = self._build()
        self._n = 0

    def _build(self) -> Kernel:
        opts = KernelOptions(state_dir=self.state_dir, strategies_dir=self.strategies, workers=4,
                             **self.options)
        return Kernel(opts, clock=self.clock, feed=SyntheticFeed(seed=7),
                      broker=PaperBroker(self.state_dir / "paper-exchange.sqlite3", cash=100_000.0))

    def restart(self) -> None:
        self.kernel.shutdown()
        self.kernel = self._build()

    def close(self) -> None:
        self.kernel.shutdown()

    def settle(self, timeout: float = 20.0) -> None:
        """Tick (without moving the clock) until no cycle is in flight and every outcome
        and command is folded in."""
        k = self.kernel
        deadline = time.monotonic() + timeout
        while True:
            k.tick_once()
            busy = [s.id for s in k.slots.values()
                    if s.inflight is not None and not (s.inflight.meta[0] != "cycle" and s.inflight.done.is_set())]
            if not busy and k._outcomes.empty() and k._async_cmd is None and not k._pending_ids:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"kernel did not settle: busy {busy}, pending {k._pending_ids}")
            time.sleep(0.002)

    def advance(self, ms: int, step_ms: int = 60_000) -> None:
        """Move the clock by ``ms`` in steps, settling after each step."""
        while ms > 0:
            step = min(step_ms, ms)
            self.clock.jump(step)
            ms -= step
            self.settle()

    def command(self, action: str, slot: str | None = None, **args) -> dict:
        self._n += 1
        cid = f"t{self._n}-{action}"
        append_commands(self.state_dir, [Command(id=cid, action=action, slot=slot, args=args)])
        self.settle()
        return self.result(cid)

    def result(self, cid: str) -> dict:
        rows = [c for c in self.kernel.snapshot()["commands"] if c["id"] == cid]
        assert len(rows) == 1, f"{cid}: {rows}"
        return rows[0]

    def add_slot(self, slot: str, strategy: str, symbol: str = "BTC/USDT", timeframe: str = "5m",
                 **extra) -> None:
        r = self.command("slot.add", slot, id=slot, symbol=symbol, timeframe=timeframe, strategy=strategy,
                         order_notional=500.0, max_notional=2000.0, **extra)
        assert r["result"] == "applied", r

    def slot(self, slot_id: str) -> dict:
        return next(s for s in self.kernel.snapshot()["slots"] if s["id"] == slot_id)

    def cycles(self, slot: str) -> list[dict]:
        return self.kernel.ledger.cycles(slot)


@pytest.fixture
def driver(tmp_path: Path, strategies: Path):
    d = Driver(tmp_path / "state", strategies)
    yield d
    d.close()


def make_driver(tmp_path: Path, strategies: Path, **options) -> Driver:
    return Driver(tmp_path / "state", strategies, **options)


def test_cycles_run_at_every_candle_close_and_trade(driver):
    driver.add_slot("btc-5m", "flip")
    driver.add_slot("eth-5m", "flip", symbol="ETH/USDT")
    driver.add_slot("btc-15m", "flip", timeframe="15m")
    driver.advance(60 * 60_000)  # an hour, in 1-minute steps
    k = driver.kernel
    for slot, tf, n in (("btc-5m", M5, 12), ("eth-5m", M5, 12), ("btc-15m", M15, 4)):
        rows = driver.cycles(slot)
        closes = [r["candle_ms"] for r in rows]
        assert len(closes) == n, (slot, closes)
        assert all(c % tf == 0 for c in closes)
        assert closes == list(range(closes[0], closes[0] + n * tf, tf))
        assert all(r["sha256"] == k.registry.get("flip").sha256 for r in rows)
        s = driver.slot(slot)
        assert (s["cycles"], s["missed_cycles"], s["state"]) == (n, 0, "active")
    orders = k.ledger.orders()
    assert len(orders) == 12 + 12 + 4, "flip orders every cycle"
    assert {o["status"] for o in orders} == {"filled"}
    assert all(o["passed_ns"] for o in orders)
    for slot, pos in k.ledger.positions().items():
        net = sum(f["qty"] if f["side"] == "buy" else -f["qty"] for f in k.ledger.fills(slot))
        assert pos.qty == pytest.approx(net, abs=1e-12)
        assert driver.slot(slot)["position"]["qty"] == pytest.approx(pos.qty)


def test_a_late_tick_is_counted_as_missed_cycles(driver):
    driver.add_slot("btc-5m", "flip")
    driver.advance(M5)
    before = len(driver.cycles("btc-5m"))
    driver.clock.jump(3 * M5)  # the tick loop slept through two closes
    driver.settle()
    s = driver.slot("btc-5m")
    assert s["missed_cycles"] == 2
    assert driver.kernel.snapshot()["cycles"]["missed"] == 2
    assert len(driver.cycles("btc-5m")) == before + 1


def test_halt_release_resume_in_process(driver):
    driver.add_slot("btc-5m", "flip")
    driver.advance(2 * M5)
    k = driver.kernel
    ran = len(driver.cycles("btc-5m"))
    atomic_write_json(driver.state_dir / "control.json", {"halt": True})
    tick = k.tick
    k.tick_once()
    snap = k.snapshot()
    assert snap["state"] == "halted"
    assert snap["cycles"]["halt_observed_tick"] == tick + 1 == k.tick
    assert k.gate.halted and k.ledger.meta_get("halt")["engaged"] is True
    driver.advance(3 * M5)
    assert len(driver.cycles("btc-5m")) == ran, "no cycle runs while halted"
    r = driver.command("resume")
    assert r["result"] == "rejected" and "release" in r["error"]
    r = driver.command("release")
    assert r["result"] == "rejected" and "still asks for a halt" in r["error"]
    assert k.snapshot()["state"] == "halted"
    clear_halt_and_release(driver.state_dir, Command(id="rel-1", action="release"))
    driver.settle()
    assert driver.result("rel-1")["result"] == "applied"
    assert k.snapshot()["state"] == "paused"
    assert driver.command("resume")["result"] == "applied"
    assert k.snapshot()["state"] == "running"
    driver.advance(2 * M5)
    assert len(driver.cycles("btc-5m")) == ran + 2
    assert driver.slot("btc-5m")["missed_cycles"] == 0, "closes passed while halted are not missed"


def test_commands_apply_in_order_once_and_are_remembered_across_a_restart(tmp_path, strategies):
    d = make_driver(tmp_path, strategies)
    try:
        d.add_slot("btc-5m", "flip")
        append_commands(d.state_dir, [
            Command(id="a1", action="slot.configure", slot="btc-5m", args={"order_notional": 111.0}),
            Command(id="a2", action="slot.configure", slot="btc-5m", args={"order_notional": 222.0}),
            Command(id="a3", action="frobnicate"),
            Command(id="a4", action="slot.pause", slot="nope"),
        ])
        d.settle()
        assert d.result("a3")["result"] == "rejected" and "unknown action 'frobnicate'" in d.result("a3")["error"]
        assert d.result("a4")["error"] == "unknown slot 'nope'"
        assert d.slot("btc-5m")["config"]["order_notional"] == 222.0
        d.restart()
        # a1 delivered again (say the console re-sent it): applied ids live in the ledger.
        append_commands(d.state_dir, [Command(id="a1", action="slot.configure", slot="btc-5m",
                                              args={"order_notional": 111.0})])
        r = d.command("slot.pause", "btc-5m")
        assert r["result"] == "applied"
        assert d.slot("btc-5m")["config"]["order_notional"] == 222.0, "a1 was not applied again"
        rows = d.kernel.ledger.recent_commands()
        assert [c["id"] for c in rows].count("a1") == 1
        assert [c["id"] for c in d.kernel.snapshot()["commands"]].count("a1") == 1
        assert "a1" not in d.kernel.snapshot()["pending_commands"]
        seqs = {c["id"]: c["seq"] for c in rows}
        assert seqs["a1"] < seqs["a2"] < seqs["a3"] < seqs["a4"]
    finally:
        d.close()


def test_reload_swaps_a_new_version_and_keeps_the_old_one_when_broken(driver, strategies):
    driver.add_slot("btc-5m", "tagged")
    driver.advance(M5)
    k = driver.kernel
    v1 = k.registry.get("tagged").sha256
    assert driver.command("reload", strategy="tagged")["detail"]["strategies"][0]["result"] == "unchanged"
    (strategies / "tagged.py").write_text(TAGGED.format(tag="v2"))
    (strategies / "tag_helper.py").write_text('TAG = "v2"\n')
    r = driver.command("reload", strategy="tagged")
    assert r["result"] == "applied"
    v2 = k.registry.get("tagged").sha256
    assert v2 != v1 and r["detail"]["strategies"][0]["new_sha256"] == v2
    driver.advance(M5)
    last = driver.cycles("btc-5m")[-1]
    assert (last["sha256"], last["reason"]) == (v2, "v2|v2")
    (strategies / "tag_helper.py").write_text("TAG = (\n")
    r = driver.command("reload", strategy="tagged")
    assert r["result"] == "rejected" and "import:" in r["error"]
    assert k.snapshot()["reload"]["result"] == "failed"
    assert k.registry.get("tagged").sha256 == v2
    driver.advance(M5)
    last = driver.cycles("btc-5m")[-1]
    assert (last["sha256"], last["reason"]) == (v2, "v2|v2")
    r = driver.command("rollback", strategy="tagged")
    assert r["result"] == "applied" and k.registry.get("tagged").sha256 == v1
    driver.advance(M5)
    assert driver.cycles("btc-5m")[-1]["reason"] == "v1|v1"


@pytest.mark.parametrize("strategy, words", [
    ("raiser", "evaluate raised RuntimeError: bad cycle 3"),
    ("hoarder", "module-level state"),
])
def test_a_runtime_fault_pauses_its_slot_only(driver, strategy, words):
    driver.add_slot("bad", strategy)
    driver.add_slot("good", "flip", symbol="ETH/USDT")
    driver.advance(2 * M5)
    assert driver.slot("bad")["fault"] is None
    driver.advance(M5)
    bad = driver.slot("bad")
    assert bad["state"] == "paused" and words in bad["fault"]
    assert driver.cycles("bad")[-1]["result"] == "fault"
    good_before = len(driver.cycles("good"))
    driver.advance(2 * M5)
    assert len(driver.cycles("good")) == good_before + 2
    good = driver.slot("good")
    assert good["state"] == "active" and good["fault"] is None


def test_a_cycle_past_its_deadline_is_abandoned_and_its_orders_refused(tmp_path, strategies):
    d = make_driver(tmp_path, strategies, cycle_deadline_ms=200)
    try:
        d.add_slot("slow", "sleeper")
        d.add_slot("good", "flip", symbol="ETH/USDT")
        d.advance(M5)  # n=1: enters
        assert d.kernel.ledger.position("slow").qty > 0
        d.clock.jump(M5)  # n=2: sleeps 0.8 s, then wants to exit
        k = d.kernel
        k.tick_once()
        deadline = time.monotonic() + 10
        while d.slot("slow")["fault"] is None and time.monotonic() < deadline:
            k.tick_once()
            time.sleep(0.01)
        slow = d.slot("slow")
        assert slow["state"] == "paused" and "deadline" in slow["fault"]
        d.settle()  # the stuck strategy comes back: its exit must not pass
        hung = d.cycles("slow")[-1]
        assert hung["result"].startswith("abandoned")
        orders = [o for o in k.ledger.orders(slot="slow") if o["candle_ms"] == hung["candle_ms"]]
        assert [(o["intent"], o["status"]) for o in orders] == [("exit", "refused")]
        assert "deadline" in orders[0]["error"]
        assert orders[0]["passed_ns"] is None
        assert k.ledger.position("slow").qty > 0, "the refused exit did not trade"
        assert d.slot("good")["fault"] is None
    finally:
        d.close()


def test_status_json_is_written_and_parses(driver):
    driver.add_slot("btc-5m", "flip")
    driver.advance(M5)
    driver.kernel._publish()
    deadline = time.monotonic() + 10
    path = driver.state_dir / "status.json"
    while time.monotonic() < deadline:
        try:
            st = json.loads(path.read_text())
            if st["slots"] and st["slots"][0]["cycles"] >= 1:
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.01)
    assert st["slots"][0]["id"] == "btc-5m" and st["slots"][0]["cycles"] >= 1
    assert st["pid"] == driver.kernel.pid


BROKEN_EVALUATE = '''\
from kernel.strategy_api import Context, Decision, StrategyParams


class Params(StrategyParams):
    window: int = 5


def warmup(params):
    return params.window


def evaluate(ctx: Context) -> Decision:
    raise ValueError("always broken")
'''


@pytest.mark.parametrize("action", ["slot.add", "slot.configure"])
def test_a_strategy_first_loaded_for_a_slot_is_checked_before_it_goes_live(driver, strategies, action):
    """A version's first load (a slot asking for a strategy no slot runs yet) passes the same
    checks as a reload: its params for that slot, and a smoke evaluation."""
    (strategies / "broken.py").write_text(BROKEN_EVALUATE)
    driver.add_slot("btc-5m", "flip")
    if action == "slot.add":
        r = driver.command("slot.add", "eth-5m", id="eth-5m", symbol="ETH/USDT", timeframe="5m",
                           strategy="broken", params={})
    else:
        r = driver.command("slot.configure", "btc-5m", strategy="broken", params={})
    assert r["result"] == "rejected", r
    assert "smoke" in r["error"] and "always broken" in r["error"], r
    k = driver.kernel
    assert "broken" not in k.registry.current, "the broken version never went live"
    assert [s["id"] for s in k.snapshot()["slots"]] == ["btc-5m"]
    assert driver.slot("btc-5m")["strategy"] == "flip"
    assert k.snapshot()["reload"]["result"] == "failed"
    # Params are checked against the slot being configured, on first load too.
    (strategies / "broken.py").write_text(BROKEN_EVALUATE.replace('raise ValueError("always broken")',
                                                                  'return Decision.hold("ok")'))
    r = driver.command("slot.configure", "btc-5m", strategy="broken", params={"window": "many"})
    assert r["result"] == "rejected" and "window" in r["error"], r
    assert driver.slot("btc-5m")["strategy"] == "flip"
    r = driver.command("slot.configure", "btc-5m", strategy="broken", params={"window": 7})
    assert r["result"] == "applied", r
    driver.advance(M5)
    assert driver.cycles("btc-5m")[-1]["reason"] == "ok"


class SlowExchange:
    """The paper exchange behind a slow network: place_order waits for ``wire`` once armed.
    (The exchange is the one thing outside the machine, so it is the one thing slowed.)"""

    def __init__(self, inner: PaperBroker) -> None:
        self.inner = inner
        self.wire = threading.Event()
        self.wire.set()
        self.on_the_wire = threading.Event()

    def place_order(self, req, *, ref_price, now_ms):
        self.on_the_wire.set()
        assert self.wire.wait(30), "test never released the exchange"
        return self.inner.place_order(req, ref_price=ref_price, now_ms=now_ms)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_the_halt_flushes_the_ledger_after_orders_already_past_the_gate_land(tmp_path, strategies):
    """An order that passed the gate before the halt was observed may still be on its way to
    the exchange. The halt's cancel sweep and ledger flush wait for it (bounded by the cycle
    deadline), so once the halt reports its flush done, the main database file alone holds
    that order and its fill, and its status says filled."""
    d = make_driver(tmp_path, strategies)
    exchange = SlowExchange(d.kernel.broker)
    d.kernel.broker = exchange
    try:
        d.add_slot("btc-5m", "flip")
        d.advance(2 * M5)  # enter, exit: flat again
        k = d.kernel
        exchange.wire.clear()
        exchange.on_the_wire.clear()
        d.clock.jump(M5)
        k.tick_once()  # dispatches the cycle: it passes the gate and waits on the wire
        assert exchange.on_the_wire.wait(10)
        atomic_write_json(d.state_dir / "control.json", {"halt": True})
        k.tick_once()  # observes the halt
        assert k.snapshot()["state"] == "halted"
        observed_ns = k.halt["observed_ns"]
        exchange.wire.set()  # the order lands after the halt was observed
        deadline = time.monotonic() + 20
        while k.snapshot()["halt"].get("cancels_pending") is not False:
            assert time.monotonic() < deadline, "the halt never finished its cancels and flush"
            k.tick_once()
            time.sleep(0.01)
        copy = tmp_path / "main-file-only.sqlite3"
        shutil.copyfile(d.state_dir / "ledger.sqlite3", copy)
        con = sqlite3.connect(copy)
        try:
            rows = con.execute("SELECT client_order_id, status, passed_ns FROM orders WHERE candle_ms=?",
                               (T0 + 3 * M5,)).fetchall()
            fills = con.execute("SELECT COUNT(*) FROM fills f JOIN orders o USING (client_order_id)"
                                " WHERE o.candle_ms=?", (T0 + 3 * M5,)).fetchone()[0]
        finally:
            con.close()
        assert len(rows) == 1 and rows[0][1] == "filled", rows
        assert rows[0][2] < observed_ns, "it passed the gate before the halt"
        assert fills == 1
        d.settle()
    finally:
        exchange.wire.set()
        d.close()


def test_a_halt_rewritten_in_place_within_one_timestamp_is_seen_at_the_next_tick(driver):
    """control.json is read at the top of every tick. A file rewritten in place with the same
    size within the filesystem's timestamp granularity (coarse clocks: 1-2 s on some
    filesystems) has the same (inode, mtime, size) as before: that must not hide a halt."""
    path = driver.state_dir / "control.json"
    k = driver.kernel
    path.write_text('{"halt": false}')
    k.tick_once()
    assert k.snapshot()["state"] == "running"
    before = os.stat(path)
    with open(path, "r+") as f:  # in place, as some editors save
        f.write('{"halt": "yes"}')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # what a coarse clock records
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    k.tick_once()
    assert k.snapshot()["state"] == "halted"
    assert k.halt_observed_tick == k.tick


def test_an_abandoned_cycle_stays_abandoned_when_a_flatten_takes_its_place(tmp_path, strategies):
    """The usual reaction to a stuck strategy is slot.flatten, which starts as soon as the stuck
    cycle returns, before the tick folds that cycle's outcome in. The outcome must still count
    as abandoned: its decision refused, its state not kept."""
    d = make_driver(tmp_path, strategies, cycle_deadline_ms=200)
    try:
        d.add_slot("slow", "sleeper")
        d.advance(M5)  # n=1: enters
        k = d.kernel
        assert k.ledger.position("slow").qty > 0
        d.clock.jump(M5)
        k.tick_once()  # n=2: sleeps 0.8 s
        stuck = k.slots["slow"].inflight
        assert stuck is not None and stuck.meta[0] == "cycle"
        deadline = time.monotonic() + 10
        while not stuck.abandoned:
            assert time.monotonic() < deadline
            k.tick_once()
            time.sleep(0.01)
        append_commands(d.state_dir, [Command(id="flat-1", action="slot.flatten", slot="slow")])
        k.tick_once()  # the flatten waits for the stuck cycle, then takes the slot at once
        assert stuck.done.wait(10)
        while k.slots["slow"].inflight is stuck:
            assert time.monotonic() < deadline + 10
            time.sleep(0.005)
        d.settle()
        assert d.result("flat-1")["result"] == "applied"
        row = [c for c in d.cycles("slow") if c["candle_ms"] == stuck.meta[1]][0]
        assert row["result"].startswith("abandoned"), row
        assert k.slots["slow"].strategy_state == {"n": 1}, "an abandoned cycle's state is not kept"
        assert k.ledger.position("slow").qty == 0, "the flatten sold"
    finally:
        d.close()


def test_a_result_that_scrolled_out_of_status_is_reported_again_once_when_resent(driver):
    """A console away for longer than status.json's memory re-sends what it never saw
    answered: the kernel reports the stored result again, and never re-applies it."""
    driver.add_slot("btc-5m", "flip")
    first = Command(id="old-1", action="slot.configure", slot="btc-5m", args={"order_notional": 123.0})
    append_commands(driver.state_dir, [first])
    driver.settle()
    assert driver.result("old-1")["result"] == "applied"
    # Push it out of the recent results with 250 other commands, pruning the file as we go.
    for i in range(250):
        append_commands(driver.state_dir, [Command(id=f"n-{i}", action="slot.resume", slot="btc-5m")],
                        prune_ids=["old-1"] + [f"n-{j}" for j in range(i)])
        driver.kernel.tick_once()
    driver.settle()
    assert "old-1" not in [c["id"] for c in driver.kernel.snapshot()["commands"]]
    append_commands(driver.state_dir, [Command(id="old-2", action="slot.configure", slot="btc-5m",
                                               args={"order_notional": 456.0})])
    driver.settle()
    append_commands(driver.state_dir, [first])  # re-sent
    for _ in range(5):
        driver.kernel.tick_once()
    reported = [c for c in driver.kernel.snapshot()["commands"] if c["id"] == "old-1"]
    assert len(reported) == 1
    assert reported[0]["result"] == "applied" and reported[0]["detail"]["reported_again"] is True
    assert driver.slot("btc-5m")["config"]["order_notional"] == 456.0, "old-1 was applied again"
    assert [c["id"] for c in driver.kernel.ledger.recent_commands(1000)].count("old-1") == 1


def test_closes_that_pass_while_the_kernel_is_down_are_counted_as_missed(driver):
    """A restart's blind window is not hidden: every close with no cycle is a missed cycle."""
    driver.add_slot("btc-5m", "flip")
    driver.advance(3 * M5)
    assert driver.slot("btc-5m")["missed_cycles"] == 0
    ran = len(driver.cycles("btc-5m"))
    assert ran >= 3
    driver.kernel.shutdown()
    driver.clock.jump(4 * M5)  # the process is down for four candle closes
    driver.kernel = driver._build()
    assert driver.slot("btc-5m")["missed_cycles"] == 4
    assert driver.kernel.snapshot()["cycles"]["missed_while_down"] == 4
    driver.advance(M5)
    assert len(driver.cycles("btc-5m")) == ran + 1  # trading goes on from the next close


def test_a_stopped_kernel_restarted_counts_nothing_missed(driver):
    driver.add_slot("btc-5m", "flip")
    driver.advance(2 * M5)
    assert driver.command("stop")["result"] == "applied"
    driver.kernel.shutdown()
    driver.clock.jump(4 * M5)
    driver.kernel = driver._build()
    assert driver.slot("btc-5m")["missed_cycles"] == 0
