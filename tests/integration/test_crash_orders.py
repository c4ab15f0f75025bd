"""kill -9 the kernel at every point of an order's life, restart it, and check nothing was lost or doubled.

Each scenario runs the real ``runkernel`` on a replay of 5m candles (two slots of a
strategy that trades at every candle) with ``FORESIGHT_CRASH_AT=<point>:<nth>``: the
nth time the kernel reaches that point it SIGKILLs itself. Then the kernel is started
again on the same state dir without the variable, reconciles, trades to the end of the
replay and stops. After that:

- no order was sent twice: the paper exchange's client ids are unique, they are exactly
  the ledger's orders that reached it, and no (slot, candle, intent) has two orders;
- no fill was lost: the exchange's fills are the ledger's fills, one for one;
- every slot's position is the sum of its fills;
- the exchange's balances are what the ledger's fills say they should be;
- nothing is left unfinished in the ledger, and the restart's reconciliation said what it did.
"""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from kernel.crash_points import BATCH_POINTS, POINTS, crash_point, parse_plan
from kernel.feeds.replay import export_synthetic
from kernel.protocol import SlotConfig
from tests.support.kernel_process import KernelProcess, kernel_env
from tests.support.ledger_reader import sqlite_rows as rows
from tests.support.slot_seeds import seed_slots
from tests.support.status_reader import read_status
from tests.support.strategy_folders import write_strategies
from tests.support.strategy_sources import FLIPFLOP

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START_MS = 1_700_000_100_000 - 1_700_000_100_000 % 900_000
HOURS = 4  # 48 candles of 5m per symbol: 96 orders in a clean run
CASH = 10_000.0
SLOTS = [
    SlotConfig(id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="flipflop", order_notional=100.0),
    SlotConfig(id="eth-5m", symbol="ETH/USDT", timeframe="5m", strategy="flipflop", order_notional=150.0),
]
NTHS = (1, 4, 9)
SCENARIOS = [((point, nth),) for point in POINTS for nth in NTHS] + [
    # A second kill while the restart reconciles the first one's fill, then one more mid-run.
    (("order_placed", 3), ("fill_recorded", 1), ("paper_after_commit", 5)),
    (("paper_after_commit", 2), ("intent_recorded", 2), ("order_marked_sent", 6)),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crash-world")
    export_synthetic(root / "candles", ["BTC/USDT", "ETH/USDT"], ["5m"], START_MS, START_MS + HOURS * 3_600_000,
                     seed=7)
    return {"candles": root / "candles", "strategies": write_strategies(root / "strategies", {"flipflop": FLIPFLOP})}


def _run(state: Path, world: dict[str, Path], crash: str | None) -> int:
    env = kernel_env(**({"FORESIGHT_CRASH_AT": crash} if crash else {}))
    kernel = KernelProcess(state, [
        "--feed", "replay", "--replay-dir", str(world["candles"]), "--speed", "inf",
        "--strategies-dir", str(world["strategies"]), "--tick-ms", "5", "--cash", str(CASH)], env=env)
    return kernel.start(wait=False).wait_exit(timeout=60)


def _scenario_id(chain) -> str:
    return "+".join(f"{p}:{n}" for p, n in chain)


@pytest.mark.parametrize("chain", SCENARIOS, ids=[_scenario_id(c) for c in SCENARIOS])
def test_kill_at_any_point_loses_and_doubles_nothing(tmp_path: Path, world, chain) -> None:
    state = tmp_path / "state"
    seed_slots(state, SLOTS)
    for point, nth in chain:
        code = _run(state, world, f"{point}:{nth}")
        log = (state / "kernel.log").read_text(errors="replace")
        assert code == -signal.SIGKILL, f"expected a kill at {point}:{nth}, exit {code}\n{log[-3000:]}"
    code = _run(state, world, None)
    log = (state / "kernel.log").read_text(errors="replace")
    assert code == 0, log[-3000:]

    status = read_status(state)
    assert status is not None and status["state"] == "stopped"
    reconciled = status["ledger"]["reconciled"]
    assert reconciled is not None and reconciled["unknown"] == 0 and reconciled["unknown_open_orders"] == 0
    assert reconciled["position_mismatches"] == [] and reconciled["summary"]
    _check_books(state)

    last_point = chain[-1][0]
    if last_point in ("intents_committed", "intent_recorded", "order_marked_sent", "paper_before_commit"):
        # The killed order never reached the exchange: the restart abandons it, never sends it.
        # (The other slot's order of the same candle may have been in flight too.)
        assert reconciled["never_sent"] >= 1, reconciled
    elif last_point in ("paper_after_commit", "order_placed"):
        # The exchange filled it; the ledger had not heard: the restart records the fill.
        assert reconciled["filled"] >= 1 and reconciled["fills_recorded"] >= 1, reconciled


# Eight slots deciding at every close: their intents are committed in batches of several
# (kernel.intent_batch), so some order of a batch reaches the exchange while another of it has not.
BATCH_SLOTS = [
    SlotConfig(id=f"{base.lower()}-5m-{i}", symbol=f"{base}/USDT", timeframe="5m", strategy="flipflop",
               order_notional=100.0 + 10 * i)
    for base in ("BTC", "ETH") for i in range(4)
]


@pytest.mark.parametrize("point", BATCH_POINTS)
def test_kill_in_the_middle_of_a_batch_s_sends_loses_and_doubles_nothing(tmp_path: Path, world, point) -> None:
    state = tmp_path / "state"
    seed_slots(state, BATCH_SLOTS)
    code = _run(state, world, f"{point}:1")
    log = (state / "kernel.log").read_text(errors="replace")
    assert code == -signal.SIGKILL, f"expected a kill at {point}:1, exit {code}\n{log[-3000:]}"
    sent_before = {r["client_order_id"] for r in rows(state / "paper-exchange.sqlite3", "SELECT * FROM orders")}
    unsent = [o for o in rows(state / "ledger.sqlite3", "SELECT * FROM orders")
              if o["status"] in ("intent", "sent") and o["client_order_id"] not in sent_before]
    assert unsent, "the kill left an intent of the batch whose order the exchange never got"
    assert _run(state, world, None) == 0, (state / "kernel.log").read_text(errors="replace")[-3000:]
    reconciled = read_status(state)["ledger"]["reconciled"]
    # The order placed at the kill is filled at the exchange and booked by the restart; the
    # batch's orders never sent are abandoned, not sent late.
    assert reconciled["filled"] >= 1 and reconciled["fills_recorded"] >= 1, reconciled
    assert reconciled["never_sent"] >= 1, reconciled
    assert reconciled["unknown"] == 0 and reconciled["position_mismatches"] == []
    abandoned = {o["client_order_id"] for o in rows(state / "ledger.sqlite3", "SELECT * FROM orders")
                 if o["status"] == "abandoned"}
    assert {o["client_order_id"] for o in unsent} <= abandoned
    _check_books(state, BATCH_SLOTS)


def _check_books(state: Path, slots: list[SlotConfig] = SLOTS) -> None:
    ledger_db, paper_db = state / "ledger.sqlite3", state / "paper-exchange.sqlite3"
    orders = rows(ledger_db, "SELECT * FROM orders")
    fills = rows(ledger_db, "SELECT * FROM fills")
    positions = {r["slot"]: r for r in rows(ledger_db, "SELECT * FROM positions")}
    x_orders = rows(paper_db, "SELECT * FROM orders")
    x_fills = rows(paper_db, "SELECT * FROM fills")
    balances = {r["currency"]: float(r["total"]) for r in rows(paper_db, "SELECT * FROM balances")}

    assert len(orders) > 40, "the replay should have traded"
    assert not [o for o in orders if o["status"] in ("intent", "sent", "open")], "unfinished orders left"

    # No order sent twice.
    x_cids = [o["client_order_id"] for o in x_orders]
    assert len(x_cids) == len(set(x_cids))
    reached = {o["client_order_id"] for o in orders if o["status"] in ("filled", "cancelled", "open")}
    assert set(x_cids) == reached, "the exchange's orders are exactly the ledger's orders that reached it"
    keys = [(o["slot"], o["candle_ms"], o["intent"]) for o in orders]
    assert len(keys) == len(set(keys)), "one order per slot, candle and intent"

    # No fill lost, none invented.
    ledger_fills = {f["fill_id"]: f for f in fills}
    assert {f["fill_id"] for f in x_fills} == set(ledger_fills)
    for xf in x_fills:
        lf = ledger_fills[xf["fill_id"]]
        assert (lf["client_order_id"], lf["qty"], lf["price"], lf["fee"]) == (
            xf["client_order_id"], xf["qty"], xf["price"], xf["fee"])

    # Positions are the sum of fills; the exchange's balances agree with the ledger.
    cash = CASH
    held: dict[str, float] = {}
    for slot in {s.id for s in slots}:
        mine = [f for f in fills if f["slot"] == slot]
        qty = sum(f["qty"] if f["side"] == "buy" else -f["qty"] for f in mine)
        assert positions[slot]["qty"] == pytest.approx(qty, abs=1e-9)
    for f in fills:
        symbol = next(s.symbol for s in slots if s.id == f["slot"])
        base = symbol.split("/")[0]
        sign = 1 if f["side"] == "buy" else -1
        held[base] = held.get(base, 0.0) + sign * f["qty"]
        cash -= sign * f["qty"] * f["price"] + f["fee"]
    for base, qty in held.items():
        assert balances.get(base, 0.0) == pytest.approx(qty, abs=1e-9)
    assert balances["USDT"] == pytest.approx(cash, abs=1e-6)


def test_crash_plan_is_off_unless_the_environment_sets_it() -> None:
    # This process has no FORESIGHT_CRASH_AT: every point is a no-op (we are still here).
    for point in POINTS + BATCH_POINTS:
        crash_point(point)
    assert parse_plan(None) is None and parse_plan("  ") is None
    assert parse_plan("order_placed:3,fill_recorded:1") == {"order_placed": 3, "fill_recorded": 1}
    for bad in ("order_placed", "order_placed:0", "nowhere:1", "order_placed:x"):
        with pytest.raises(ValueError):
            parse_plan(bad)


def test_control_json_cannot_arm_a_crash(tmp_path: Path, world) -> None:
    """The plan is read from the environment at import; nothing in control.json reaches it."""
    import json

    state = tmp_path / "state"
    seed_slots(state, SLOTS)
    (state / "control.json").write_text(json.dumps({"commands": [
        {"id": "c1", "action": "crash", "args": {"at": "order_placed:1"}},
        {"id": "c2", "action": "slot.configure", "slot": "btc-5m", "args": {"FORESIGHT_CRASH_AT": "order_placed:1"}},
    ]}))
    assert _run(state, world, None) == 0
    status = read_status(state)
    results = {c["id"]: c["result"] for c in status["commands"]}
    assert results == {"c1": "rejected", "c2": "rejected"}
    assert status["ledger"]["orders"] > 40
