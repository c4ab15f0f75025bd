"""The execution kernel: owns the scheduler, the slots, the ledger and the control plane.

One tick thread: read control.json (halt first), apply commands in order, abandon
cycles past their deadline, dispatch the cycles that are due to the worker pool, fold
finished cycles into slot state, publish status.json. Cycles run on workers; reloads
on their own thread; the tick thread never runs strategy code.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import threading
import time
import types
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from .brokers import BrokerOrder, OrderRequest
from .control import CONTROL_FILE, STATUS_FILE, read_control
from .crash_points import crash_point
from .errors import (
    AuthenticationFailed,
    GateRefused,
    KernelError,
    OrderRejected,
    ReloadFailed,
    StrategyFault,
    TemporaryError,
)
from .gate import OrderGate
from .ledger import CycleRecord, Ledger
from .protocol import (
    ACTIONS,
    SLOT_ACTIONS,
    Command,
    SlotConfig,
    ms_to_iso,
    utcnow_iso,
)
from .scheduler import Scheduler, timeframe_ms
from .status_writer import StatusWriter
from .strategy_api import ENTER, EXIT, Context
from .versions import (
    SmokeSample,
    StrategyLoader,
    StrategyRegistry,
    StrategyVersion,
    check_version,
    migrate,
    run_evaluate,
)
from .workers import Job, WorkerPool

log = logging.getLogger("kernel")

EPS = 1e-12
RECENT = 200  # how many command / reload results status.json keeps
CONTROL_MTIME_GRANULARITY_NS = 2_000_000_000  # coarsest file timestamps we expect (FAT: 2 s)


@dataclass
class KernelOptions:
    state_dir: Path
    strategies_dir: Path | None = None
    speed: float = 1.0
    tick_ms: int = 100
    workers: int = 8
    cycle_deadline_ms: int = 10_000
    reload_budget_ms: int = 2_000
    late_after_ms: int = 1_000
    status_interval_ms: int = 1_000
    demo: bool = False
    seed: int = 7
    cash: float = 100_000.0
    replay_dir: Path | None = None
    smoke_slots: int = 3
    # Venue (kernel/venues.py). feed None: "replay" with a replay_dir, else "synthetic".
    feed: str | None = None  # synthetic | replay | ccxt
    broker: str = "paper"  # paper | ccxt
    exchange: str | None = None  # a ccxt exchange id, for the ccxt feed and broker
    sandbox: bool = False
    secrets_file: Path | None = None
    start_ms: int | None = None  # simulated clock start (a replay's default: its first candle)
    halt_cancel_wait_ms: int = 500  # how long engage_halt waits for the cancels before returning


@dataclass
class SlotRuntime:
    config: SlotConfig
    paused: bool = False
    fault: str | None = None
    strategy_state: dict[str, Any] = field(default_factory=dict)
    state_schema: int | None = None
    cycles: int = 0
    missed_cycles: int = 0
    late_cycles: int = 0
    errors: int = 0
    last_cycle_ms: int | None = None
    inflight: Job | None = None
    pending_config: SlotConfig | None = None
    position_qty: float = 0.0
    entry_price: float | None = None
    realized_pnl: float = 0.0
    last_price: float | None = None
    last_order: dict[str, Any] | None = None  # the last order's summary: rejected, unknown, filled...

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def state(self) -> str:
        if not self.config.enabled:
            return "disabled"
        return "paused" if (self.paused or self.fault) else "active"

    def persist_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "config": self.config.model_dump(mode="json"),
            "paused": self.paused,
            "fault": self.fault,
            "strategy_state": self.strategy_state,
            "state_schema": self.state_schema,
            "cycles": self.cycles,
            "missed_cycles": self.missed_cycles,
            "late_cycles": self.late_cycles,
            "errors": self.errors,
            "last_cycle_ms": self.last_cycle_ms,
        }


@dataclass
class CycleOutcome:
    slot: str
    close_ms: int
    strategy: str
    version: int | None = None
    sha256: str | None = None
    started_ms: int | None = None
    lag_ms: int | None = None
    lock_wait_ns: int = 0
    duration_us: int = 0
    result: str = "hold"
    reason: str | None = None
    state: dict[str, Any] | None = None
    state_schema: int | None = None
    fault: str | None = None
    order: dict[str, Any] | None = None
    job: Job | None = None  # the job that ran it: whether it was abandoned is that job's, not the slot's


class _Rejected(Exception):
    """A command's rejection; its message is what the operator reads."""


def client_order_id(slot: str, key: str, intent: str) -> str:
    """Deterministic per slot, candle (or command) and intent: the same order always gets
    the same id, so neither a retry nor a restart can send it twice. 32 characters of
    [0-9a-f] after ``fs``: accepted by every exchange we know (Binance allows 36)."""
    digest = hashlib.blake2b(f"{slot}|{key}|{intent}".encode(), digest_size=15).hexdigest()
    return f"fs{digest}"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[k]


class Kernel:
    def __init__(
        self,
        options: KernelOptions,
        *,
        clock: Any = None,
        feed: Any = None,
        broker: Any = None,
    ) -> None:
        self.options = options
        self.state_dir = Path(options.state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.control_path = self.state_dir / CONTROL_FILE
        self.status_path = self.state_dir / STATUS_FILE
        strategies_dir = options.strategies_dir or (Path(__file__).resolve().parent.parent / "strategies")
        self.loader = StrategyLoader(strategies_dir)
        self.registry = StrategyRegistry()
        self.ledger = Ledger(self.state_dir / "ledger.sqlite3")
        self.gate = OrderGate()
        self.scheduler = Scheduler()
        self.pid = os.getpid()
        self.started_at = utcnow_iso()

        # Clock, feed and broker: those passed in, else chosen from options (kernel/venues.py).
        from .venues import build_venue

        venue = build_venue(options, state_dir=self.state_dir,
                            resume_ms=self.ledger.meta_get("clock_ms", 0) or 0,
                            on_replay_end=self.stop, clock=clock, feed=feed, broker=broker)
        self.clock, self.feed, self.broker = venue.clock, venue.feed, venue.broker
        self.venue = venue
        self._halt_thread: threading.Thread | None = None
        self._unresolved: dict[str, set[str]] = {}  # slot -> client ids whose outcome is unknown
        self._unresolved_lock = threading.Lock()

        self.slots: dict[str, SlotRuntime] = {}
        self.tick = 0
        self.running = True  # scheduler on
        self.paused = False  # entries off
        self.halt: dict[str, Any] = {"engaged": False, "since": None, "reason": None, "cancelled_orders": []}
        self._stop = threading.Event()
        self._stopped = False
        self._applied_ids: set[str] = set()
        self._reannounced: set[str] = set()
        self._recent_commands: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._recent_reloads: deque[dict[str, Any]] = deque(maxlen=50)
        self._pending_ids: list[str] = []
        self._control_commands: list[Command] = []
        self._control_error: str | None = None
        self._control_halt = False
        self._control_fp: tuple | None = None
        self._control_read_wall = 0.0
        self._control_racy = True  # see _poll_control
        self._async_cmd: tuple[Command, Future, Callable[[Any], tuple[str, str | None, dict | None]]] | None = None
        self._outcomes: queue.SimpleQueue[CycleOutcome] = queue.SimpleQueue()
        self._reload_queue: queue.SimpleQueue[tuple[Callable[[], Any], Future] | None] = queue.SimpleQueue()
        self._reload_thread = threading.Thread(target=self._reload_loop, name="reload", daemon=True)
        self._status_urgent = True
        self._status_last_wall = 0.0
        self._dirty_slots: set[str] = set()
        self._cycle_records: list[CycleRecord] = []
        self._lags: deque[int] = deque(maxlen=5000)
        self._lock_waits_ns: deque[int] = deque(maxlen=5000)
        self._totals = {"ran": 0, "missed": 0, "missed_while_down": 0, "late": 0, "faults": 0, "abandoned": 0, "orders": 0,
                        "refused": 0}
        self.reconciled: dict[str, Any] | None = None
        self.halt_observed_tick: int | None = None
        self.pool = WorkerPool(options.workers, self._on_job_done)
        self.status_writer = StatusWriter(self.status_path)
        self._boot()

    # ================================================================== boot

    def _boot(self) -> None:
        meta = self.ledger
        self.running = bool(meta.meta_get("running", True))
        self.paused = bool(meta.meta_get("paused", False))
        halt = meta.meta_get("halt")
        if isinstance(halt, dict) and halt.get("engaged"):
            self.halt = {**self.halt, **halt}
            self.gate.engage_halt()
        self._applied_ids = self.ledger.applied_command_ids()
        for row in self.ledger.recent_commands(RECENT):
            self._recent_commands.append(
                {"id": row["id"], "action": row["action"], "slot": row["slot"], "result": row["result"],
                 "error": row["error"], "at": row["at"], "detail": row["detail"]}
            )
        rows = self.ledger.load_slots()
        if not rows and self.options.demo:
            from .demo import demo_slots

            for cfg in demo_slots():
                self.slots[cfg.id] = SlotRuntime(config=cfg)
            self.ledger.save_slots([s.persist_row() for s in self.slots.values()])
        for row in rows:
            try:
                cfg = SlotConfig.model_validate(row["config"])
            except ValidationError as exc:
                log.error("slot %s has an invalid stored config, skipped: %s", row["id"], exc)
                continue
            self.slots[cfg.id] = SlotRuntime(
                config=cfg, paused=row["paused"], fault=row["fault"],
                strategy_state=row["strategy_state"], state_schema=row["state_schema"],
                cycles=row["cycles"], missed_cycles=row["missed_cycles"],
                late_cycles=row["late_cycles"], errors=row["errors"], last_cycle_ms=row["last_cycle_ms"],
            )
        for slot_id, pos in self.ledger.positions().items():
            if slot_id in self.slots:
                rt = self.slots[slot_id]
                rt.position_qty, rt.entry_price, rt.realized_pnl = pos.qty, pos.entry_price, pos.realized_pnl
        # First versions: a strategy that does not load leaves its slots faulted, not the kernel down.
        for name in sorted({s.config.strategy for s in self.slots.values()}):
            try:
                version = self._load_checked(name, check=False)
                self.registry.swap(version)
            except ReloadFailed as exc:
                log.error("strategy %s did not load: %s", name, exc)
                self._record_reload(name, "failed", f"{exc.stage}: {exc}", None, None, None, None)
                for s in self.slots.values():
                    if s.config.strategy == name:
                        s.fault = f"strategy {name} did not load: {exc}"
                        self._dirty_slots.add(s.id)
        use_ledger = getattr(self.broker, "use_ledger", None)
        if use_ledger is not None:  # the ccxt broker looks up an order's symbol in the ledger
            use_ledger(self.ledger)
        self.reconcile()
        if self.halt["engaged"]:  # a kill during a halt may have left resting orders: cancel again
            self._start_halt_cancels()
        now = self.clock.now_ms()
        # The clock stored in the ledger is written about once a second, cycles every tick: after
        # a kill -9 it can lag the last candle run. Never schedule a candle that already ran.
        last_run = self.ledger.last_candles()
        trading = self.running and not self.halt["engaged"]
        for s in self.slots.values():
            self.scheduler.add(s.id, s.config.timeframe, max(now, last_run.get(s.id, now)))
            last = last_run.get(s.id)
            if trading and s.config.enabled and last is not None:
                # Closes that passed while the process was down had no cycle: that is the blind
                # window of a restart, and it is counted, not hidden.
                tf = timeframe_ms(s.config.timeframe)
                lost = max(0, ((now // tf) * tf - last) // tf)
                if lost:
                    s.missed_cycles += lost
                    self._totals["missed"] += lost
                    self._totals["missed_while_down"] += lost
                    self._dirty_slots.add(s.id)

    def reconcile(self) -> dict[str, Any]:
        """Before any slot trades: every unfinished order of the ledger (intent, sent, open)
        is looked up at the broker by its client id and the ledger brought to what the
        broker says (fills it lacks are recorded, final states marked, orders the broker
        never saw abandoned); orders the broker holds open that the ledger does not know
        are reported, and so are positions the account does not hold. An order whose fate
        the broker cannot tell (unreachable, keys refused) pauses its slot: it must not
        trade on a position that may be wrong."""
        found: dict[str, Any] = {
            "checked": 0, "filled": 0, "open": 0, "cancelled": 0, "rejected": 0, "never_sent": 0,
            "unknown": 0, "fills_recorded": 0, "unknown_open_orders": 0, "orders": [],
            "broker_only_orders": [], "position_mismatches": [], "errors": [],
        }
        unreachable: str | None = None  # after one "broker unreachable", do not wait on each order
        for order in self.ledger.unfinished_orders():
            cid = order["client_order_id"]
            found["checked"] += 1
            entry = {"client_order_id": cid, "slot": order["slot"], "symbol": order["symbol"],
                     "intent": order["intent"], "side": order["side"], "qty": order["qty"],
                     "ledger_status": order["status"]}
            error, bo = unreachable, None
            if error is None:
                try:
                    bo = self.broker.fetch_order(cid)
                except (TemporaryError, AuthenticationFailed) as exc:
                    error = unreachable = f"{type(exc).__name__}: {exc}"
                except KernelError as exc:
                    error = f"{type(exc).__name__}: {exc}"
            if error is not None:
                found["unknown"] += 1
                found["orders"].append({**entry, "result": "unknown", "error": error})
                slot = self.slots.get(order["slot"])
                if slot is not None:
                    slot.fault = (f"order {cid} could not be reconciled at startup ({error}): "
                                  "check it at the exchange, then resume the slot")
                    self._dirty_slots.add(slot.id)
                continue
            if bo is None:
                self.ledger.mark_order(cid, "abandoned", error="never reached the broker (found at startup)")
                found["never_sent"] += 1
                found["orders"].append({**entry, "result": "never_sent"})
                continue
            new_fills = self._record_broker_order(cid, bo)
            found["fills_recorded"] += new_fills
            key = bo.status if bo.status in ("filled", "cancelled", "rejected") else "open"
            found[key] += 1
            found["orders"].append({**entry, "result": bo.status, "filled_qty": bo.filled_qty,
                                    "fills_recorded": new_fills})
        if unreachable is None:
            self._reconcile_broker_view(found)
        else:
            found["errors"].append(f"broker unreachable: {unreachable}")
        for slot_id, pos in self.ledger.positions().items():
            if slot_id in self.slots:
                rt = self.slots[slot_id]
                rt.position_qty, rt.entry_price, rt.realized_pnl = pos.qty, pos.entry_price, pos.realized_pnl
        found["at"] = utcnow_iso()
        found["orders"] = found["orders"][:50]
        found["summary"] = _reconcile_summary(found)
        self.reconciled = found
        self._status_urgent = True
        if found["checked"] or found["unknown_open_orders"] or found["position_mismatches"] or found["errors"]:
            (log.error if (found["unknown"] or found["unknown_open_orders"] or found["position_mismatches"])
             else log.warning)("reconciled at startup: %s", found["summary"])
        return found

    def _reconcile_broker_view(self, found: dict[str, Any]) -> None:
        """Open orders at the broker that the ledger does not know, and positions the
        account does not hold: reported (never acted on: they may be a human's)."""
        try:
            open_orders = self.broker.open_orders()
        except KernelError as exc:
            found["errors"].append(f"could not list the broker's open orders: {type(exc).__name__}: {exc}")
            open_orders = []
        for bo in open_orders:
            if self.ledger.order(bo.client_order_id) is None:
                found["unknown_open_orders"] += 1
                if len(found["broker_only_orders"]) < 50:
                    found["broker_only_orders"].append({
                        "client_order_id": bo.client_order_id, "broker_order_id": bo.broker_order_id,
                        "symbol": bo.symbol, "side": bo.side, "type": bo.type, "qty": bo.qty,
                        "limit_price": bo.limit_price, "status": bo.status,
                    })
        held: dict[str, float] = {}
        for slot_id, pos in self.ledger.positions().items():
            symbol = (self.slots[slot_id].config.symbol if slot_id in self.slots
                      else (self.ledger.orders(slot=slot_id) or [{}])[-1].get("symbol"))
            if symbol and pos.qty > EPS:
                base = symbol.split("/")[0]
                held[base] = held.get(base, 0.0) + pos.qty
        if not held:
            return
        try:
            balances = self.broker.balances()
        except KernelError as exc:
            found["errors"].append(f"could not read the broker's balances: {type(exc).__name__}: {exc}")
            return
        for base, qty in sorted(held.items()):
            have = balances.get(base, 0.0)
            if have < qty * (1 - 1e-9) - EPS:  # the ledger holds more than the account: exits would fail
                found["position_mismatches"].append({"currency": base, "ledger": qty, "broker": have})

    # ================================================================== run loop

    def run(self) -> None:
        """Tick until stop() is called (SIGTERM/SIGINT), then stop gracefully."""
        self._reload_thread.start()
        self._status_urgent = True
        tick_s = self.options.tick_ms / 1000.0
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                self.tick_once()
                next_tick += tick_s
                delay = next_tick - time.monotonic()
                if delay < 0:
                    next_tick = time.monotonic()  # we fell behind: do not burst to catch up
                    delay = 0
                self._stop.wait(delay)
        finally:
            self.shutdown()

    def stop(self) -> None:
        """Signal-safe: ask the run loop to finish."""
        self._stop.set()

    def tick_once(self) -> None:
        self.tick += 1
        self._poll_control()
        if self._control_halt and not self.halt["engaged"]:
            self.engage_halt(self._control_halt_reason, source="control.json")
        self._drain_outcomes()
        self._process_commands()
        self._check_deadlines()
        if self.running and not self.halt["engaged"]:
            self._advance_replay_clock()
            self._dispatch_due()
        on_tick = getattr(self.broker, "on_tick", None)
        if on_tick is not None:  # e.g. the ccxt broker's dead man's switch: proof the tick loop lives
            on_tick()
        self._persist()
        self._maybe_publish()

    def _advance_replay_clock(self) -> None:
        """A replay clock (kernel/replay_clock.py) moves only while no cycle is in flight,
        and never past the next close a slot waits for: every candle is evaluated, at
        its own close time, run after run."""
        advance = getattr(self.clock, "advance", None)
        if advance is None:
            return
        for s in self.slots.values():
            job = s.inflight
            if job is not None and not job.abandoned and not (job.meta[0] != "cycle" and job.done.is_set()):
                return
        if self._async_cmd is not None or not self._outcomes.empty():
            return
        nexts = [self.scheduler.next_close(s.id) for s in self.slots.values() if s.config.enabled]
        nexts = [n for n in nexts if n is not None]
        advance(min(nexts) if nexts else None)

    # ================================================================== control

    def _poll_control(self) -> None:
        try:
            st = os.stat(self.control_path)
            fp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            fp = None
        now = time.monotonic()
        # An unchanged (inode, mtime, size) proves nothing for a file modified within the
        # filesystem's timestamp granularity of our last read (racy git's rule): re-read then.
        if fp == self._control_fp and now - self._control_read_wall < 1.0 and not self._control_racy:
            return
        self._control_read_wall = now
        read_wall_ns = time.time_ns()
        read = read_control(self.control_path)
        self._control_racy = (read.fingerprint is not None
                              and read.fingerprint[1] >= read_wall_ns - CONTROL_MTIME_GRANULARITY_NS)
        changed = read.error != self._control_error
        self._control_fp = read.fingerprint
        self._control_halt = read.halt
        self._control_halt_reason = read.halt_reason
        self._control_error = read.error
        self._control_commands = read.commands if read.error is None else []
        if changed:
            self._status_urgent = True
            if read.error:
                log.error("control.json rejected: %s", read.error)

    def _process_commands(self) -> None:
        if self._async_cmd is not None:
            cmd, fut, finish = self._async_cmd
            if not fut.done():
                self._pending_ids = self._pending()
                return
            self._async_cmd = None
            try:
                result, error, detail = finish(fut.result())
            except _Rejected as exc:
                result, error, detail = "rejected", str(exc), None
            except ReloadFailed as exc:
                result, error, detail = "rejected", f"{exc.stage}: {exc}", None
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the command stream
                log.exception("command %s failed", cmd.id)
                result, error, detail = "rejected", f"internal error: {type(exc).__name__}: {exc}", None
            self._finish_command(cmd, result, error, detail)
        recent_ids: set[str] | None = None
        for cmd in self._control_commands:
            if cmd.id in self._applied_ids:
                if cmd.id not in self._reannounced:
                    # Re-sent after its result scrolled out of status.json (a console that
                    # was away): report the stored result again, once; never re-apply.
                    self._reannounced.add(cmd.id)
                    if recent_ids is None:
                        recent_ids = {e["id"] for e in self._recent_commands}
                    if cmd.id not in recent_ids:
                        self._reannounce(cmd.id)
                continue
            try:
                outcome = self._apply(cmd)
            except _Rejected as exc:
                self._finish_command(cmd, "rejected", str(exc), None)
                continue
            except Exception as exc:  # noqa: BLE001
                log.exception("command %s failed", cmd.id)
                self._finish_command(cmd, "rejected", f"internal error: {type(exc).__name__}: {exc}", None)
                continue
            if isinstance(outcome, tuple) and len(outcome) == 2 and isinstance(outcome[0], Future):
                self._async_cmd = (cmd, outcome[0], outcome[1])
                break  # later commands wait: file order is apply order
            detail = outcome if isinstance(outcome, dict) else None
            self._finish_command(cmd, "applied", None, detail)
        self._pending_ids = self._pending()

    def _reannounce(self, command_id: str) -> None:
        row = self.ledger.command_result(command_id)
        if row is None:
            return
        detail = dict(row["detail"] or {})
        detail["reported_again"] = True
        self._recent_commands.append({"id": row["id"], "action": row["action"], "slot": row["slot"],
                                      "result": row["result"], "error": row["error"], "at": row["at"],
                                      "detail": detail})
        self._status_urgent = True

    def _pending(self) -> list[str]:
        return [c.id for c in self._control_commands if c.id not in self._applied_ids][:100]

    def _finish_command(self, cmd: Command, result: str, error: str | None, detail: dict | None) -> None:
        at = utcnow_iso()
        # The result, and every state change so far (the command's own included), in one
        # transaction: a kill -9 cannot leave a command remembered as applied without its effect.
        records, self._cycle_records = self._cycle_records, []
        ids, self._dirty_slots = self._dirty_slots, set()
        self.ledger.record_command(
            id=cmd.id, action=cmd.action, slot=cmd.slot, result=result, error=error, at=at,
            detail=detail, meta={"running": self.running, "paused": self.paused},
            slots=[self.slots[i].persist_row() for i in ids if i in self.slots], cycles=records,
        )
        crash_point("command_recorded")
        self._applied_ids.add(cmd.id)
        entry = {"id": cmd.id, "action": cmd.action, "slot": cmd.slot, "result": result,
                 "error": error, "at": at, "detail": detail}
        self._recent_commands.append(entry)
        self._status_urgent = True
        (log.info if result == "applied" else log.warning)(
            "command %s %s%s: %s%s", cmd.id, cmd.action, f" {cmd.slot}" if cmd.slot else "", result,
            f" ({error})" if error else "",
        )

    def _slot_for(self, cmd: Command) -> SlotRuntime:
        if not cmd.slot:
            raise _Rejected(f"{cmd.action} needs a slot")
        slot = self.slots.get(cmd.slot)
        if slot is None:
            raise _Rejected(f"unknown slot {cmd.slot!r}")
        return slot

    def _apply(self, cmd: Command) -> Any:
        action = cmd.action
        if action not in ACTIONS:
            raise _Rejected(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        if action not in SLOT_ACTIONS and cmd.slot is not None:
            raise _Rejected(f"{action} is a kernel action and takes no slot")
        handler = getattr(self, "_cmd_" + action.replace(".", "_"))
        return handler(cmd)

    # kernel actions -----------------------------------------------------------------

    def _cmd_start(self, cmd: Command) -> dict:
        if self.running:
            return {"note": "already running"}
        self.running = True
        self.scheduler.reset(self.clock.now_ms())
        return {}

    def _cmd_stop(self, cmd: Command) -> dict:
        if not self.running:
            return {"note": "already stopped"}
        self.running = False
        return {}

    def _cmd_pause(self, cmd: Command) -> dict:
        self.paused = True
        return {}

    def _cmd_resume(self, cmd: Command) -> dict:
        if self.halt["engaged"]:
            raise _Rejected("halted: release the halt first, then resume")
        self.paused = False
        return {}

    def _cmd_release(self, cmd: Command) -> dict:
        if not self.halt["engaged"]:
            raise _Rejected("not halted")
        if self._control_halt:
            raise _Rejected(
                "control.json still asks for a halt: write halt false together with the release"
            )
        self.gate.release_halt()
        released = dict(self.halt)
        self.halt = {"engaged": False, "since": None, "reason": None, "cancelled_orders": []}
        self.paused = True  # after a release the kernel stays paused until someone resumes it
        self.ledger.meta_set(halt=self.halt, paused=True)
        self.scheduler.reset(self.clock.now_ms())
        return {"released": released, "note": "kernel paused: resume to trade"}

    def _cmd_reload(self, cmd: Command) -> tuple[Future, Callable]:
        name = cmd.args.get("strategy")
        if name is not None:
            if not isinstance(name, str) or not self.loader.exists(name):
                raise _Rejected(f"no strategy {name!r} in strategies/")
            names = [name]
        else:
            names = sorted(self.registry.current) or sorted({s.config.strategy for s in self.slots.values()})
        samples = {n: self._smoke_samples(n) for n in names}

        def work() -> list[dict]:
            return [self._reload_one(n, samples[n], cmd.id) for n in names]

        def finish(results: list[dict]) -> tuple[str, str | None, dict]:
            for r in results:
                self._after_reload(r)
            failed = [r for r in results if r["result"] in ("failed", "abandoned")]
            detail = {"strategies": results}
            if failed:
                return "rejected", "; ".join(f"{r['strategy']}: {r['error']}" for r in failed), detail
            return "applied", None, detail

        return self._submit_reload(work), finish

    def _cmd_rollback(self, cmd: Command) -> tuple[Future, Callable]:
        name = cmd.args.get("strategy")
        if not isinstance(name, str) or not name:
            raise _Rejected("rollback needs args.strategy")
        if name not in self.registry.current:
            raise _Rejected(f"strategy {name!r} is not loaded")
        if name not in self.registry.previous:
            raise _Rejected(f"no previous version of {name} to roll back to")

        def work() -> dict:
            old = self.registry.get(name)
            cur, prev, waited = self.registry.rollback(name)
            return {"strategy": name, "result": "rolled_back", "error": None, "lock_wait_ms": waited,
                    "old_sha256": old.sha256 if old else None, "new_sha256": cur.sha256,
                    "version": cur.number, "command_id": cmd.id}

        def finish(r: dict) -> tuple[str, None, dict]:
            self._after_reload(r)
            return "applied", None, r

        return self._submit_reload(work), finish

    # slot actions -------------------------------------------------------------------

    def _cmd_slot_pause(self, cmd: Command) -> dict:
        slot = self._slot_for(cmd)
        slot.paused = True
        self._dirty_slots.add(slot.id)
        return {}

    def _cmd_slot_resume(self, cmd: Command) -> dict:
        slot = self._slot_for(cmd)
        if self.halt["engaged"]:
            raise _Rejected("halted: release the halt first")
        if not self.registry.get(slot.config.strategy):
            raise _Rejected(f"strategy {slot.config.strategy} has no loaded version: reload it first")
        cleared = slot.fault
        slot.paused = False
        slot.fault = None
        self._dirty_slots.add(slot.id)
        return {"cleared_fault": cleared} if cleared else {}

    def _cmd_slot_flatten(self, cmd: Command) -> Any:
        slot = self._slot_for(cmd)
        slot.paused = True  # so the strategy does not re-enter at its next cycle
        self._dirty_slots.add(slot.id)
        fut: Future = Future()

        def run(job: Job) -> dict:
            return self._flatten(slot, cmd.id)

        def dispatch_when_idle() -> None:
            # Never two jobs of one slot at once: wait for an in-flight cycle.
            if slot.inflight is not None and not slot.inflight.done.is_set():
                threading.Timer(0.01, dispatch_when_idle).start()
                return
            job = self.pool.submit(run, key=slot.id, meta=("flatten", fut))
            slot.inflight = job

        dispatch_when_idle()

        def finish(r: dict) -> tuple[str, str | None, dict]:
            if r.get("error"):
                return "rejected", r["error"], r
            return "applied", None, r

        return fut, finish

    def _cmd_slot_configure(self, cmd: Command) -> Any:
        slot = self._slot_for(cmd)
        args = dict(cmd.args)
        args.pop("id", None)
        merged = {**slot.config.model_dump(mode="json"), **args, "id": slot.id}
        try:
            cfg = SlotConfig.model_validate(merged)
        except ValidationError as exc:
            raise _Rejected(f"invalid slot config: {_short_validation(exc)}") from exc
        return self._with_strategy(cfg, lambda: self._configure(slot, cfg))

    def _cmd_slot_add(self, cmd: Command) -> Any:
        args = dict(cmd.args)
        if cmd.slot and args.get("id", cmd.slot) != cmd.slot:
            raise _Rejected("slot and args.id disagree")
        args.setdefault("id", cmd.slot)
        try:
            cfg = SlotConfig.model_validate(args)
        except ValidationError as exc:
            raise _Rejected(f"invalid slot config: {_short_validation(exc)}") from exc
        if cfg.id in self.slots:
            raise _Rejected(f"slot {cfg.id!r} exists; use slot.configure")
        return self._with_strategy(cfg, lambda: self._add_slot(cfg))

    def _with_strategy(self, cfg: SlotConfig, apply: Callable[[], dict]) -> Any:
        """Check cfg.params against the strategy's params model, loading it first (on the
        reload thread) if no version of it runs yet."""
        if not self.loader.exists(cfg.strategy):
            raise _Rejected(f"no strategy {cfg.strategy!r} in strategies/")
        version = self.registry.get(cfg.strategy)
        if version is not None:
            self._validate_params(version, cfg)
            return apply()

        # A first load passes the same checks as a reload: this slot's params, and a smoke
        # evaluation on its recent candles (with the state and position it will start from).
        existing = self.slots.get(cfg.id)
        keeps_state = existing is not None and existing.config.strategy == cfg.strategy
        sample = SmokeSample(
            slot=cfg.id, symbol=cfg.symbol, timeframe=cfg.timeframe, params=dict(cfg.params), candles=(),
            position=existing.position_qty if existing else 0.0,
            entry_price=existing.entry_price if existing else None,
            state=dict(existing.strategy_state) if keeps_state else {},
            state_schema=existing.state_schema if keeps_state else None,
        )

        def work() -> dict:
            return self._reload_one(cfg.strategy, [sample], None)

        def finish(r: dict) -> tuple[str, str | None, dict]:
            self._after_reload(r)
            v = self.registry.get(cfg.strategy)
            if v is None:
                raise _Rejected(f"strategy {cfg.strategy} did not load: {r.get('error')}")
            self._validate_params(v, cfg)
            return "applied", None, apply()

        return self._submit_reload(work), finish

    @staticmethod
    def _validate_params(version: StrategyVersion, cfg: SlotConfig) -> None:
        try:
            version.params(cfg.params)
        except ValidationError as exc:
            raise _Rejected(f"invalid params for {cfg.strategy}: {_short_validation(exc)}") from exc

    def _configure(self, slot: SlotRuntime, cfg: SlotConfig) -> dict:
        slot.pending_config = cfg
        self._dirty_slots.add(slot.id)
        if slot.inflight is None or slot.inflight.done.is_set():
            self._apply_pending_config(slot)
        return {"config": cfg.model_dump(mode="json")}

    def _apply_pending_config(self, slot: SlotRuntime) -> None:
        cfg = slot.pending_config
        if cfg is None:
            return
        slot.pending_config = None
        old = slot.config
        slot.config = cfg
        if cfg.strategy != old.strategy:
            slot.strategy_state, slot.state_schema = {}, None
        if cfg.timeframe != old.timeframe:
            self.scheduler.remove(slot.id)
            self.scheduler.add(slot.id, cfg.timeframe, self.clock.now_ms())
        self._dirty_slots.add(slot.id)
        self._status_urgent = True

    def _add_slot(self, cfg: SlotConfig) -> dict:
        slot = SlotRuntime(config=cfg)
        self.slots[cfg.id] = slot
        self.scheduler.add(cfg.id, cfg.timeframe, self.clock.now_ms())
        self._dirty_slots.add(cfg.id)
        return {"config": cfg.model_dump(mode="json")}

    # ================================================================== halt

    def engage_halt(self, reason: str | None, *, source: str) -> None:
        """No strategy runs, no strategy order passes the gate, resting orders are
        cancelled, the ledger is flushed; latched until an explicit release."""
        observed_ns = self.gate.engage_halt()
        self.halt_observed_tick = self.tick
        self.halt = {
            "engaged": True,
            "since": utcnow_iso(),
            "reason": reason or f"halt requested in {source}",
            "cancelled_orders": [],
            "cancel_failed": [],
            "cancels_pending": True,
            "observed_ns": observed_ns,
        }
        self.ledger.meta_set(halt=self.halt)
        log.critical("HALT engaged (%s): %s; cancelling resting orders", source, self.halt["reason"])
        self._status_urgent = True
        self._publish()  # status says halted now, however long the broker takes to cancel
        self._start_halt_cancels()

    def _start_halt_cancels(self) -> None:
        """Cancel resting orders on a thread of their own: a slow exchange must not hold
        the tick thread. A fast broker is done within halt_cancel_wait_ms, and then the
        halt reports its cancels before engage_halt returns."""
        t = threading.Thread(target=self._cancel_resting_orders, args=(self.halt.get("since"),),
                             name="halt-cancel", daemon=True)
        self._halt_thread = t
        t.start()
        t.join(self.options.halt_cancel_wait_ms / 1000.0)
        if not t.is_alive():
            self._publish()

    def _cancel_resting_orders(self, since: str | None) -> None:
        cancelled, failed = [], []
        # Orders that passed the gate just before the halt may still be on their way: the sweep
        # must see them at the broker, and the flush must hold their fills.
        if not self.gate.wait_settled(self.options.cycle_deadline_ms / 1000.0):
            failed.append({"client_order_id": None, "error": f"{self.gate.in_transit} order(s) that passed "
                           "before the halt had no broker answer within the cycle deadline"})
        try:
            for bo in self.broker.open_orders():
                try:
                    res = self.broker.cancel_order(bo.client_order_id)
                    if self.ledger.order(bo.client_order_id) is not None:
                        self._record_broker_order(bo.client_order_id, res)
                    cancelled.append(bo.client_order_id)
                except Exception as exc:  # noqa: BLE001 - report, keep cancelling the rest
                    failed.append({"client_order_id": bo.client_order_id, "error": str(exc)})
        except Exception as exc:  # noqa: BLE001
            failed.append({"client_order_id": None, "error": f"could not list open orders: {exc}"})
        if not self.halt.get("engaged") or self.halt.get("since") != since:
            return  # released (or re-engaged) meanwhile: that halt reports for itself
        done = {**self.halt, "cancelled_orders": cancelled, "cancel_failed": failed, "cancels_pending": False}
        self.ledger.meta_set(halt=done)
        self.ledger.flush()
        # Reported done only once flushed: a reader of status.json may rely on the main file.
        self.halt = {**done, "flushed_at": utcnow_iso()}
        (log.critical if failed else log.warning)(
            "HALT: cancelled %d resting order(s)%s", len(cancelled),
            f"; {len(failed)} could not be cancelled: {failed}" if failed else "")
        self._status_urgent = True

    # ================================================================== cycles

    def _dispatch_due(self) -> None:
        now = self.clock.now_ms()
        for due in self.scheduler.due(now):
            slot = self.slots.get(due.slot_id)
            if slot is None or not slot.config.enabled:
                continue
            if due.missed:
                slot.missed_cycles += due.missed
                self._totals["missed"] += due.missed
                self._dirty_slots.add(slot.id)
            if slot.inflight is not None and not slot.inflight.done.is_set():
                slot.missed_cycles += 1  # never two cycles of one slot at once
                self._totals["missed"] += 1
                self._dirty_slots.add(slot.id)
                continue
            if slot.pending_config is not None:
                self._apply_pending_config(slot)
            cfg = slot.config
            slot.inflight = self.pool.submit(
                self._cycle, cfg, due.close_ms, dict(slot.strategy_state), slot.state_schema,
                key=slot.id, meta=("cycle", due.close_ms),
            )

    def _on_job_done(self, job: Job) -> None:
        kind, info = job.meta
        if kind == "flatten":
            fut: Future = info
            if job.error is not None:
                fut.set_result({"error": f"{type(job.error).__name__}: {job.error}"})
            else:
                fut.set_result(job.result)
            return
        if job.error is not None:
            out = CycleOutcome(slot=job.key, close_ms=info, strategy="?", result="fault",
                               fault=f"internal error: {type(job.error).__name__}: {job.error}")
            log.error("cycle %s@%s crashed", job.key, info, exc_info=job.error)
        else:
            out = job.result
        out.job = job
        self._outcomes.put(out)

    def _cycle(self, job: Job, cfg: SlotConfig, close_ms: int, state: dict, state_schema: int | None) -> CycleOutcome:
        started_ms = self.clock.now_ms()
        t0 = time.perf_counter_ns()
        out = CycleOutcome(slot=cfg.id, close_ms=close_ms, strategy=cfg.strategy, started_ms=started_ms,
                           lag_ms=started_ms - close_ms)
        version, waited = self.registry.pin(cfg.strategy)  # the version this whole cycle runs
        out.lock_wait_ns = waited
        if version is None:
            out.result, out.reason = "no_version", f"strategy {cfg.strategy} has no loaded version"
            return out
        out.version, out.sha256 = version.number, version.sha256
        slot = self.slots.get(cfg.id)
        try:
            params = version.params(cfg.params)
            candles = tuple(self.feed.candles(cfg.symbol, cfg.timeframe, close_ms, version.warmup(params)))
            state = migrate(version, state, state_schema)
            position = slot.position_qty if slot else 0.0
            dust_qty = getattr(self.broker, "dust_qty", None)
            if dust_qty is not None and 0 < position < dust_qty(cfg.symbol):
                position = 0.0  # less than the exchange's smallest order: unsellable dust, the slot is flat
            ctx = Context(
                slot=cfg.id, symbol=cfg.symbol, timeframe=cfg.timeframe, now_ms=close_ms,
                candles=candles, position=position, entry_price=slot.entry_price if slot else None,
                params=params, state=types.MappingProxyType(state),
                entries_allowed=self._entries_allowed(slot),
            )
            decision = run_evaluate(version, ctx)
            if version.state_changed():
                version.tainted = "evaluate changed module-level state"
                raise StrategyFault(
                    "evaluate changed module-level state: strategies must be stateless"
                )
            if decision.state is not None:
                json.dumps(decision.state)  # must be storable
        except StrategyFault as exc:
            out.result, out.fault, out.reason = "fault", str(exc), str(exc)
            return out
        except ValidationError as exc:
            out.result = "fault"
            out.fault = out.reason = f"params invalid for {cfg.strategy} v{version.number}: {_short_validation(exc)}"
            return out
        except (TypeError, ValueError) as exc:
            out.result, out.fault = "fault", f"state not storable: {exc}"
            out.reason = out.fault
            return out
        except Exception as exc:  # noqa: BLE001 - a feed error is this cycle's, not the kernel's
            out.result, out.reason = "error", f"{type(exc).__name__}: {exc}"
            return out
        out.state = decision.state
        out.state_schema = version.state_schema
        out.reason = decision.reason[:200] if decision.reason else None
        out.result = decision.action
        if candles and slot is not None:
            price = candles[-1].close
            slot.last_price = price
            if decision.action == ENTER and position <= EPS:
                qty = cfg.order_notional / price
                out.order = self._send(slot, cfg, "entry", "buy", qty, price, close_ms, str(close_ms), job)
            elif decision.action == EXIT and position > EPS:
                out.order = self._send(slot, cfg, "exit", "sell", position, price, close_ms, str(close_ms), job)
        out.duration_us = (time.perf_counter_ns() - t0) // 1000
        return out

    def _entries_allowed(self, slot: SlotRuntime | None) -> bool:
        return not (self.paused or self.halt["engaged"] or slot is None or slot.paused or slot.fault)

    def _send(self, slot: SlotRuntime, cfg: SlotConfig, intent: str, side: str, qty: float,
              price: float, candle_ms: int | None, key: str, job: Job | None,
              command_id: str | None = None) -> dict:
        """Risk checks → intent in the ledger → the gate's final pass → broker → fills."""
        cid = client_order_id(cfg.id, key, intent)
        summary: dict[str, Any] = {"client_order_id": cid, "intent": intent, "side": side, "qty": qty}
        now_ms = self.clock.now_ms()
        try:
            if intent != "flatten":
                if self.gate.halted:
                    raise self.gate.refuse("halted", "halted: no strategy order passes the gate")
                # A cycle past its deadline goes on to the gate, which refuses it for that reason and
                # the ledger records it (its slot is paused by now too, but the deadline is why).
                past_deadline = job is not None and (job.abandoned or (
                    job.started_wall is not None
                    and (time.monotonic() - job.started_wall) * 1000 > self.options.cycle_deadline_ms))
                if intent == "entry" and not past_deadline and not self._entries_allowed(slot):
                    raise self.gate.refuse("paused", "entries are paused")
            self.gate.check_risk(
                slot=cfg.id, intent=intent, qty=qty, price=price, position_qty=slot.position_qty,
                max_position=cfg.max_position, max_notional=cfg.max_notional,
                max_orders_per_minute=cfg.max_orders_per_minute, now_ms=now_ms,
            )
        except GateRefused as exc:
            summary.update(status="refused", error=str(exc), reason=exc.reason)
            return summary
        if self._unresolved.get(cfg.id):
            # An earlier order of this slot ended in doubt: its fate decides the position first.
            resolved = self._resolve_unknown_orders(slot)
            summary.update(status="refused", reason="unresolved" if not resolved else "resolved",
                           error=("an earlier order's outcome is still unknown: no new order until the "
                                  "broker answers" if not resolved else
                                  "an earlier order's outcome was just resolved: the next cycle decides again"))
            return summary
        if not self.ledger.record_intent(
            client_order_id=cid, slot=cfg.id, symbol=cfg.symbol, candle_ms=candle_ms, intent=intent,
            side=side, qty=qty, ref_price=price, command_id=command_id,
        ):
            summary.update(status="duplicate", error="this order was already recorded; not sent again")
            return summary
        crash_point("intent_recorded")
        deadline_passed = False
        if job is not None and job.started_wall is not None:
            deadline_passed = (time.monotonic() - job.started_wall) * 1000 > self.options.cycle_deadline_ms
        try:
            passed_ns = self.gate.pass_order(
                slot=cfg.id, intent=intent, now_ms=now_ms,
                abandoned=bool(job and job.abandoned), deadline_passed=deadline_passed,
                entries_allowed=self._entries_allowed(slot),
            )
        except GateRefused as exc:
            self.ledger.mark_order(cid, "refused", error=str(exc))
            summary.update(status="refused", error=str(exc), reason=exc.reason)
            return summary
        try:
            return self._place_passed(slot, cfg, cid, side, qty, price, now_ms, passed_ns, summary)
        finally:
            self.gate.order_settled()  # recorded (or in doubt): a halt's flush need not wait for it

    def _place_passed(self, slot: SlotRuntime, cfg: SlotConfig, cid: str, side: str, qty: float,
                      price: float, now_ms: int, passed_ns: int, summary: dict[str, Any]) -> dict:
        """An order the gate passed: marked sent, placed at the broker, its fills recorded."""
        self.ledger.mark_order(cid, "sent", passed_ns=passed_ns)
        crash_point("order_marked_sent")
        req = OrderRequest(client_order_id=cid, symbol=cfg.symbol, side=side, qty=qty)  # type: ignore[arg-type]
        try:
            bo = self.broker.place_order(req, ref_price=price, now_ms=now_ms)
        except OrderRejected as exc:
            self.ledger.mark_order(cid, "rejected", error=str(exc))
            summary.update(status="rejected", error=str(exc))
            log.warning("slot %s: order %s rejected: %s", cfg.id, cid, exc)
            return summary
        except AuthenticationFailed as exc:
            self.ledger.mark_order(cid, "rejected", error=str(exc))
            slot.fault = f"broker authentication failed: {exc}: fix the keys, then resume the slot"
            self._status_urgent = True
            log.error("slot %s paused: %s", cfg.id, slot.fault)
            summary.update(status="rejected", error=str(exc))
            return summary
        except TemporaryError as exc:
            # Left as "sent": looked up by its client id before this slot's next order, and at
            # the next start; until then the slot sends nothing (its position is in doubt).
            with self._unresolved_lock:
                self._unresolved.setdefault(cfg.id, set()).add(cid)
            log.error("slot %s: order %s outcome unknown after retries: %s", cfg.id, cid, exc)
            summary.update(status="unknown", error=str(exc))
            return summary
        crash_point("order_placed")
        self._record_broker_order(cid, bo)
        pos = self.ledger.position(cfg.id)
        slot.position_qty, slot.entry_price, slot.realized_pnl = pos.qty, pos.entry_price, pos.realized_pnl
        summary.update(status=bo.status, filled_qty=bo.filled_qty, avg_price=bo.avg_price)
        return summary

    def _record_broker_order(self, cid: str, bo: BrokerOrder) -> int:
        new = 0
        for f in bo.fills:
            if self.ledger.record_fill(fill_id=f.fill_id, client_order_id=cid, qty=f.qty, price=f.price,
                                       fee=f.fee, ts_ms=f.ts_ms):
                new += 1
                crash_point("fill_recorded")
        status = {"partially_filled": "open"}.get(bo.status, bo.status)
        self.ledger.mark_order(cid, status, broker_order_id=bo.broker_order_id)
        return new

    def _resolve_unknown_orders(self, slot: SlotRuntime) -> bool:
        """Look up this slot's orders whose outcome was unknown (the broker stayed
        unreachable through the retries) and record what the broker says. True once
        none is left in doubt."""
        with self._unresolved_lock:
            cids = sorted(self._unresolved.get(slot.id, ()))
        for cid in cids:
            try:
                bo = self.broker.fetch_order(cid)
            except KernelError as exc:
                log.warning("slot %s: order %s still unknown: %s", slot.id, cid, exc)
                return False
            if bo is None:
                self.ledger.mark_order(cid, "abandoned", error="never reached the broker")
            else:
                self._record_broker_order(cid, bo)
            with self._unresolved_lock:
                self._unresolved.get(slot.id, set()).discard(cid)
            log.warning("slot %s: order %s resolved: %s", slot.id, cid, bo.status if bo else "never sent")
        pos = self.ledger.position(slot.id)
        slot.position_qty, slot.entry_price, slot.realized_pnl = pos.qty, pos.entry_price, pos.realized_pnl
        return True

    def _flatten(self, slot: SlotRuntime, command_id: str) -> dict:
        pos = self.ledger.position(slot.id)
        if pos.qty <= EPS:
            return {"note": "no position to flatten", "qty": 0.0}
        price = self.feed.last_price(slot.config.symbol, self.clock.now_ms())
        res = self._send(slot, slot.config, "flatten", "sell", pos.qty, price, None, command_id, None,
                         command_id=command_id)
        if res.get("status") not in ("filled", "open"):
            res["error"] = res.get("error") or f"flatten order {res.get('status')}"
        return res

    def _check_deadlines(self) -> None:
        limit_s = self.options.cycle_deadline_ms / 1000.0
        now = time.monotonic()
        for slot in self.slots.values():
            job = slot.inflight
            if job is None or job.done.is_set() or job.abandoned or job.started_wall is None:
                continue
            if now - job.started_wall > limit_s:
                self.pool.abandon(job)
                slot.fault = f"cycle for candle {ms_to_iso(job.meta[1])} exceeded its deadline of {self.options.cycle_deadline_ms} ms and was abandoned"
                slot.errors += 1
                self._totals["abandoned"] += 1
                self._dirty_slots.add(slot.id)
                self._status_urgent = True
                log.error("slot %s: %s", slot.id, slot.fault)

    def _drain_outcomes(self) -> None:
        while True:
            try:
                out = self._outcomes.get_nowait()
            except queue.Empty:
                return
            slot = self.slots.get(out.slot)
            if slot is None:
                continue
            # By now the slot may run another job (a flatten starts as soon as a stuck cycle
            # returns): judge this outcome by its own job.
            job = out.job if out.job is not None else slot.inflight
            abandoned = bool(job is not None and job.abandoned and job.meta[1] == out.close_ms)
            if slot.inflight is job and job is not None and job.done.is_set():
                slot.inflight = None
            if slot.pending_config is not None:
                self._apply_pending_config(slot)
            result = "abandoned" if abandoned else out.result
            if out.order and out.order.get("status") == "refused":
                result = f"{result}:refused:{out.order.get('reason')}"
                self._totals["refused"] += 1
            elif out.order:
                self._totals["orders"] += 1
            slot.cycles += 1
            slot.last_cycle_ms = out.close_ms
            self._totals["ran"] += 1
            if out.lag_ms is not None:
                self._lags.append(out.lag_ms)
                wall_lag = out.lag_ms / max(self.clock.speed, 1e-9)
                if wall_lag > self.options.late_after_ms:
                    slot.late_cycles += 1
                    self._totals["late"] += 1
            self._lock_waits_ns.append(out.lock_wait_ns)
            if out.fault and not abandoned:
                if slot.fault is None:
                    log.error("slot %s paused: %s", slot.id, out.fault)
                slot.fault = out.fault
                slot.errors += 1
                self._totals["faults"] += 1
                self._status_urgent = True
            elif out.result == "error":
                slot.errors += 1
            if out.state is not None and not abandoned:
                slot.strategy_state = out.state
                slot.state_schema = out.state_schema
            elif out.state_schema is not None and slot.state_schema is None:
                slot.state_schema = out.state_schema
            if out.order:
                slot.last_order = out.order
            if out.order and out.order.get("status") in ("filled", "open", "rejected", "unknown"):
                self._status_urgent = True
            self._dirty_slots.add(slot.id)
            self._cycle_records.append(CycleRecord(
                slot=out.slot, candle_ms=out.close_ms, strategy=out.strategy, version=out.version,
                sha256=out.sha256, started_ms=out.started_ms, lag_ms=out.lag_ms,
                lock_wait_us=out.lock_wait_ns // 1000, duration_us=out.duration_us, result=result,
                reason=(out.fault or out.reason),
            ))

    def _persist(self) -> None:
        # One transaction: a slot's counters never disagree with its recorded cycles.
        records, self._cycle_records = self._cycle_records, []
        ids, self._dirty_slots = self._dirty_slots, set()
        if records or ids:
            self.ledger.record_cycles_and_slots(
                records, [self.slots[i].persist_row() for i in ids if i in self.slots])

    # ================================================================== reloads

    def _reload_loop(self) -> None:
        while True:
            item = self._reload_queue.get()
            if item is None:
                return
            fn, fut = item
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)

    def _submit_reload(self, fn: Callable[[], Any]) -> Future:
        fut: Future = Future()
        if not self._reload_thread.is_alive() and not self._reload_thread.ident:
            # Not running (tests driving tick_once by hand): run inline.
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)
            return fut
        self._reload_queue.put((fn, fut))
        return fut

    def _smoke_samples(self, name: str) -> list[SmokeSample]:
        # Params are checked for every slot; the smoke evaluation runs on a few of them.
        samples = []
        for slot in self.slots.values():
            if slot.config.strategy != name:
                continue
            samples.append(SmokeSample(
                slot=slot.id, symbol=slot.config.symbol, timeframe=slot.config.timeframe,
                params=dict(slot.config.params), candles=(), position=slot.position_qty,
                entry_price=slot.entry_price, state=dict(slot.strategy_state),
                state_schema=slot.state_schema,
            ))
        return samples

    def _load_checked(self, name: str, samples: list[SmokeSample] | None = None, *, check: bool = True) -> StrategyVersion:
        version = self.loader.load(name, self.registry.next_number(name))
        samples = samples if samples is not None else self._smoke_samples(name)
        now = self.clock.now_ms()
        budget = self.options.reload_budget_ms / 1000.0
        # Every slot's params must validate; candles for a few, to evaluate on.
        with_candles = []
        for i, s in enumerate(samples):
            if i < self.options.smoke_slots:
                try:
                    params = version.params(s.params)
                    n = version.warmup(params)
                    tf = timeframe_ms(s.timeframe)
                    s.candles = tuple(self.feed.candles(s.symbol, s.timeframe, (now // tf) * tf, n))
                except Exception:  # noqa: BLE001 - check_version reports params errors itself
                    pass
            with_candles.append(s)
        try:
            if check:
                check_version(version, with_candles, budget)
            else:
                # First load at boot: the interface was checked; no smoke run holds up the start,
                # but module state must still never change.
                version.set_baseline()
        except ReloadFailed:
            version.unload()
            raise
        return version

    def _reload_one(self, name: str, samples: list[SmokeSample], command_id: str | None) -> dict:
        old = self.registry.get(name)
        r: dict[str, Any] = {"strategy": name, "command_id": command_id, "lock_wait_ms": None,
                             "old_sha256": old.sha256 if old else None, "new_sha256": None,
                             "error": None}
        try:
            version = self._load_checked(name, samples)
        except ReloadFailed as exc:
            r.update(result="failed", error=f"{exc.stage}: {exc}")
            return r
        r["new_sha256"] = version.sha256
        if old is not None and version.sha256 == old.sha256:
            version.unload()
            r.update(result="unchanged", version=old.number)
            return r
        try:
            r["lock_wait_ms"] = self.registry.swap(version)
        except ReloadFailed as exc:
            version.unload()
            r.update(result="abandoned", error=f"{exc.stage}: {exc}")
            return r
        r.update(result="loaded", version=version.number)
        return r

    def _after_reload(self, r: dict) -> None:
        self._record_reload(r["strategy"], r["result"], r.get("error"), r.get("lock_wait_ms"),
                            r.get("old_sha256"), r.get("new_sha256"), r.get("command_id"))
        if r["result"] in ("loaded", "rolled_back"):
            # A fault that came from the old version's code does not outlive it.
            for s in self.slots.values():
                if s.config.strategy == r["strategy"] and s.fault and not s.paused and (
                    s.inflight is None or s.inflight.done.is_set()
                ):
                    s.fault = None
                    self._dirty_slots.add(s.id)

    def _record_reload(self, name, result, error, lock_wait_ms, old_sha, new_sha, command_id) -> None:
        entry = {"at": utcnow_iso(), "strategy": name, "result": result, "error": error,
                 "lock_wait_ms": lock_wait_ms, "old_sha256": old_sha, "new_sha256": new_sha,
                 "command_id": command_id}
        self._recent_reloads.append(entry)
        self._status_urgent = True
        (log.info if result in ("loaded", "unchanged", "rolled_back") else log.error)(
            "reload %s: %s%s", name, result, f" ({error})" if error else "")

    # ================================================================== status

    def state_name(self) -> str:
        if self._stopped:
            return "stopped"
        if self.halt["engaged"]:
            return "halted"
        if not self.running:
            return "stopped"
        return "paused" if self.paused else "running"

    def snapshot(self) -> dict[str, Any]:
        now = self.clock.now_ms()
        strategies = {}
        for name, v in sorted(self.registry.current.items()):
            prev = self.registry.previous.get(name)
            strategies[name] = {"version": v.number, "sha256": v.sha256, "loaded_at": v.loaded_at,
                                "files": v.files, "previous": prev.describe() if prev else None}
        slots = []
        cash = None
        unrealized_total = 0.0
        marked = 0.0
        for s in self.slots.values():
            unrealized = None
            if s.position_qty > EPS and s.last_price is not None and s.entry_price is not None:
                unrealized = s.position_qty * (s.last_price - s.entry_price)
                unrealized_total += unrealized
                marked += s.position_qty * s.last_price
            elif s.position_qty > EPS and s.entry_price is not None:
                marked += s.position_qty * s.entry_price
            v = self.registry.current.get(s.config.strategy)
            nxt = self.scheduler.next_close(s.id) if (self.running and not self.halt["engaged"]) else None
            slots.append({
                "id": s.id, "symbol": s.config.symbol, "timeframe": s.config.timeframe,
                "strategy": s.config.strategy, "strategy_version": v.number if v else None,
                "strategy_sha256": v.sha256 if v else None, "state": s.state, "fault": s.fault,
                "position": {"qty": s.position_qty, "entry_price": s.entry_price,
                             "realized_pnl": s.realized_pnl},
                "last_cycle_at": ms_to_iso(s.last_cycle_ms), "next_cycle_at": ms_to_iso(nxt),
                "cycles": s.cycles, "missed_cycles": s.missed_cycles, "late_cycles": s.late_cycles,
                "errors": s.errors, "last_price": s.last_price, "unrealized_pnl": unrealized,
                "last_order": s.last_order,
                "config": s.config.model_dump(mode="json"),
            })
        ledger = self.ledger.summary()
        try:
            # A remote broker answers from a cache refreshed off this thread: no request per status.
            balances = getattr(self.broker, "cached_balances", None) or self.broker.balances
            cash = balances().get("USDT")
        except Exception:  # noqa: BLE001
            cash = None
        ledger["cash"] = cash
        ledger["equity"] = (cash + marked) if cash is not None else None
        ledger["unrealized_pnl"] = unrealized_total
        ledger["reconciled"] = dict(self.reconciled) if self.reconciled else None
        lags = list(self._lags)
        waits = [w / 1000.0 for w in self._lock_waits_ns]
        halt = {k: v for k, v in self.halt.items()
                if k in ("engaged", "since", "reason", "cancelled_orders", "cancel_failed", "cancels_pending",
                         "flushed_at")}
        describe = getattr(self.broker, "describe", None)
        return {
            "protocol": 1,
            "state": self.state_name(),
            "heartbeat_at": utcnow_iso(),
            "clock_at": ms_to_iso(now),
            "speed": self.clock.speed,
            "tick": self.tick,
            "tick_ms": self.options.tick_ms,
            "pid": self.pid,
            "started_at": self.started_at,
            "halt": halt,
            "broker": describe() if describe is not None else {"name": getattr(self.broker, "name", None)},
            "strategies": strategies,
            "reload": self._recent_reloads[-1] if self._recent_reloads else {},
            "reloads": list(self._recent_reloads)[-20:],
            "commands": list(self._recent_commands),
            "pending_commands": self._pending_ids,
            "control_error": self._control_error,
            "slots": slots,
            "fills": self.ledger.recent_fills(200),
            "ledger": ledger,
            "cycles": {
                **self._totals,
                "lag_ms_p50": _percentile(lags, 0.5), "lag_ms_p99": _percentile(lags, 0.99),
                "lock_wait_us_p50": _percentile(waits, 0.5), "lock_wait_us_p99": _percentile(waits, 0.99),
                "lock_wait_us_max": max(waits) if waits else None,
                "halt_observed_tick": self.halt_observed_tick,
            },
        }

    def _maybe_publish(self) -> None:
        now = time.monotonic()
        if self._status_urgent or now - self._status_last_wall >= self.options.status_interval_ms / 1000.0:
            self._publish()

    def _publish(self) -> None:
        self._status_urgent = False
        self._status_last_wall = time.monotonic()
        # Where the clock was, so a restarted simulated clock resumes from there.
        self.ledger.meta_set(clock_ms=self.clock.now_ms(), _durable=False)
        self.status_writer.publish(self.snapshot())

    # ================================================================== shutdown

    def shutdown(self) -> None:
        """Graceful stop: no new cycles, in-flight ones finish (up to their deadline),
        ledger flushed, status says stopped."""
        if self._stopped:
            return
        deadline = time.monotonic() + self.options.cycle_deadline_ms / 1000.0
        while time.monotonic() < deadline:
            busy = [s for s in self.slots.values() if s.inflight is not None and not s.inflight.done.is_set()
                    and not s.inflight.abandoned]
            if not busy:
                break
            time.sleep(0.01)
        self._drain_outcomes()
        self._persist()
        self._reload_queue.put(None)
        self.pool.shutdown(wait_s=1.0)
        if self._halt_thread is not None:
            self._halt_thread.join(timeout=self.options.cycle_deadline_ms / 1000.0)
        self.ledger.meta_set(clock_ms=self.clock.now_ms())
        self.ledger.flush()
        self._stopped = True
        snap = self.snapshot()
        self.status_writer.close()
        self.status_writer.write_now(snap)
        try:
            self.broker.close()
        finally:
            self.ledger.close()
        log.info("kernel stopped")


def _reconcile_summary(found: dict[str, Any]) -> str:
    """One line for status.json and the audit trail: what startup reconciliation found."""
    parts = [f"{found['checked']} unfinished order(s) checked with the broker"]
    for key, label in (("filled", "filled"), ("open", "still open"), ("cancelled", "cancelled"),
                       ("rejected", "rejected"), ("never_sent", "never sent (abandoned)"),
                       ("unknown", "UNKNOWN (slot paused)")):
        if found.get(key):
            parts.append(f"{found[key]} {label}")
    parts.append(f"{found['fills_recorded']} missing fill(s) recorded")
    if found.get("unknown_open_orders"):
        parts.append(f"{found['unknown_open_orders']} open order(s) at the broker unknown to the ledger")
    if found.get("position_mismatches"):
        parts.append("ledger positions not held at the broker: " + ", ".join(
            f"{m['currency']} {m['ledger']:.8g} > {m['broker']:.8g}" for m in found["position_mismatches"]))
    parts.extend(found.get("errors") or [])
    return "; ".join(parts)


def _short_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)
