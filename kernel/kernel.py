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
from .brokers.paper import PaperBroker
from .clock import SimClock, WallClock
from .control import CONTROL_FILE, STATUS_FILE, read_control
from .errors import (
    AuthenticationFailed,
    GateRefused,
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
    module_state_fingerprint,
    run_evaluate,
)
from .workers import Job, WorkerPool

log = logging.getLogger("kernel")

EPS = 1e-12
RECENT = 200  # how many command / reload results status.json keeps


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

        if clock is None:
            if options.speed == 1:
                clock = WallClock()
            else:
                resume_from = max(self.ledger.meta_get("clock_ms", 0) or 0, time.time_ns() // 1_000_000)
                clock = SimClock(options.speed, start_ms=resume_from)
        self.clock = clock
        if feed is None:
            if options.replay_dir is not None:
                from .feeds.replay import ReplayFeed

                feed = ReplayFeed(options.replay_dir)
            else:
                from .feeds.synthetic import SyntheticFeed

                feed = SyntheticFeed(seed=options.seed)
        self.feed = feed
        if broker is None:
            broker = PaperBroker(self.state_dir / "paper-exchange.sqlite3", cash=options.cash)
        self.broker = broker

        self.slots: dict[str, SlotRuntime] = {}
        self.tick = 0
        self.running = True  # scheduler on
        self.paused = False  # entries off
        self.halt: dict[str, Any] = {"engaged": False, "since": None, "reason": None, "cancelled_orders": []}
        self._stop = threading.Event()
        self._stopped = False
        self._applied_ids: set[str] = set()
        self._recent_commands: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._recent_reloads: deque[dict[str, Any]] = deque(maxlen=50)
        self._pending_ids: list[str] = []
        self._control_commands: list[Command] = []
        self._control_error: str | None = None
        self._control_halt = False
        self._control_fp: tuple | None = None
        self._control_read_wall = 0.0
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
        self._totals = {"ran": 0, "missed": 0, "late": 0, "faults": 0, "abandoned": 0, "orders": 0,
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
        self.reconcile()
        now = self.clock.now_ms()
        for s in self.slots.values():
            self.scheduler.add(s.id, s.config.timeframe, now)

    def reconcile(self) -> dict[str, Any]:
        """Before any slot trades: every intent or open order in the ledger is looked up
        at the broker by its client id, and the ledger brought to what the broker says."""
        found = {"checked": 0, "filled": 0, "open": 0, "cancelled": 0, "rejected": 0,
                 "never_sent": 0, "fills_recorded": 0, "orders": []}
        for order in self.ledger.unfinished_orders():
            cid = order["client_order_id"]
            found["checked"] += 1
            try:
                bo = self.broker.fetch_order(cid)
            except TemporaryError as exc:
                found["orders"].append({"client_order_id": cid, "result": f"unknown: {exc}"})
                continue
            if bo is None:
                self.ledger.mark_order(cid, "abandoned", error="never reached the broker (found at startup)")
                found["never_sent"] += 1
                found["orders"].append({"client_order_id": cid, "result": "never_sent"})
                continue
            found["fills_recorded"] += self._record_broker_order(cid, bo)
            key = bo.status if bo.status in ("filled", "cancelled", "rejected") else "open"
            found[key] += 1
            found["orders"].append({"client_order_id": cid, "result": bo.status})
        for slot_id, pos in self.ledger.positions().items():
            if slot_id in self.slots:
                rt = self.slots[slot_id]
                rt.position_qty, rt.entry_price, rt.realized_pnl = pos.qty, pos.entry_price, pos.realized_pnl
        found["at"] = utcnow_iso()
        found["orders"] = found["orders"][:50]
        self.reconciled = found
        if found["checked"]:
            log.warning("reconciled %d unfinished orders at startup: %s", found["checked"],
                        {k: v for k, v in found.items() if k != "orders"})
        return found

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
            self._dispatch_due()
        self._persist()
        self._maybe_publish()

    # ================================================================== control

    def _poll_control(self) -> None:
        try:
            st = os.stat(self.control_path)
            fp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            fp = None
        now = time.monotonic()
        if fp == self._control_fp and now - self._control_read_wall < 1.0:
            return
        self._control_read_wall = now
        read = read_control(self.control_path)
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
        for cmd in self._control_commands:
            if cmd.id in self._applied_ids:
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

    def _pending(self) -> list[str]:
        return [c.id for c in self._control_commands if c.id not in self._applied_ids][:100]

    def _finish_command(self, cmd: Command, result: str, error: str | None, detail: dict | None) -> None:
        at = utcnow_iso()
        self.ledger.record_command(
            id=cmd.id, action=cmd.action, slot=cmd.slot, result=result, error=error, at=at,
            detail=detail, meta={"running": self.running, "paused": self.paused},
        )
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

        def work() -> dict:
            return self._reload_one(cfg.strategy, [], None)

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
            "observed_ns": observed_ns,
        }
        self.ledger.meta_set(halt=self.halt)
        cancelled, failed = [], []
        try:
            for bo in self.broker.open_orders():
                try:
                    res = self.broker.cancel_order(bo.client_order_id)
                    self._record_broker_order(bo.client_order_id, res)
                    cancelled.append(bo.client_order_id)
                except Exception as exc:  # noqa: BLE001 - report, keep cancelling the rest
                    failed.append({"client_order_id": bo.client_order_id, "error": str(exc)})
        except Exception as exc:  # noqa: BLE001
            failed.append({"client_order_id": None, "error": f"could not list open orders: {exc}"})
        self.halt["cancelled_orders"] = cancelled
        self.halt["cancel_failed"] = failed
        self.ledger.meta_set(halt=self.halt)
        self.ledger.flush()
        log.critical("HALT engaged (%s): %s; cancelled %d orders", source, self.halt["reason"], len(cancelled))
        self._status_urgent = True
        self._publish()

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
            ctx = Context(
                slot=cfg.id, symbol=cfg.symbol, timeframe=cfg.timeframe, now_ms=close_ms,
                candles=candles, position=position, entry_price=slot.entry_price if slot else None,
                params=params, state=types.MappingProxyType(state),
                entries_allowed=self._entries_allowed(slot),
            )
            decision = run_evaluate(version, ctx)
            if version.baseline and module_state_fingerprint(version.modules) != version.baseline:
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
                if intent == "entry" and not self._entries_allowed(slot):
                    raise self.gate.refuse("paused", "entries are paused")
            self.gate.check_risk(
                slot=cfg.id, intent=intent, qty=qty, price=price, position_qty=slot.position_qty,
                max_position=cfg.max_position, max_notional=cfg.max_notional,
                max_orders_per_minute=cfg.max_orders_per_minute, now_ms=now_ms,
            )
        except GateRefused as exc:
            summary.update(status="refused", error=str(exc), reason=exc.reason)
            return summary
        if not self.ledger.record_intent(
            client_order_id=cid, slot=cfg.id, symbol=cfg.symbol, candle_ms=candle_ms, intent=intent,
            side=side, qty=qty, ref_price=price, command_id=command_id,
        ):
            summary.update(status="duplicate", error="this order was already recorded; not sent again")
            return summary
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
        self.ledger.mark_order(cid, "sent", passed_ns=passed_ns)
        req = OrderRequest(client_order_id=cid, symbol=cfg.symbol, side=side, qty=qty)  # type: ignore[arg-type]
        try:
            bo = self.broker.place_order(req, ref_price=price, now_ms=now_ms)
        except OrderRejected as exc:
            self.ledger.mark_order(cid, "rejected", error=str(exc))
            summary.update(status="rejected", error=str(exc))
            return summary
        except AuthenticationFailed as exc:
            self.ledger.mark_order(cid, "rejected", error=str(exc))
            slot.fault = f"broker authentication failed: {exc}"
            summary.update(status="rejected", error=str(exc))
            return summary
        except TemporaryError as exc:
            # Left as "sent": the next start's reconciliation (or a retry) looks it up by id.
            summary.update(status="unknown", error=str(exc))
            return summary
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
        status = {"partially_filled": "open"}.get(bo.status, bo.status)
        self.ledger.mark_order(cid, status, broker_order_id=bo.broker_order_id)
        return new

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
            job = slot.inflight
            abandoned = bool(job is not None and job.abandoned and job.meta[1] == out.close_ms)
            if job is not None and job.done.is_set():
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
            if out.order and out.order.get("status") in ("filled", "open"):
                self._status_urgent = True
            self._dirty_slots.add(slot.id)
            self._cycle_records.append(CycleRecord(
                slot=out.slot, candle_ms=out.close_ms, strategy=out.strategy, version=out.version,
                sha256=out.sha256, started_ms=out.started_ms, lag_ms=out.lag_ms,
                lock_wait_us=out.lock_wait_ns // 1000, duration_us=out.duration_us, result=result,
                reason=(out.fault or out.reason),
            ))

    def _persist(self) -> None:
        if self._cycle_records:
            records, self._cycle_records = self._cycle_records, []
            self.ledger.record_cycles(records)
        if self._dirty_slots:
            ids, self._dirty_slots = self._dirty_slots, set()
            self.ledger.save_slots([self.slots[i].persist_row() for i in ids if i in self.slots])

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
        samples = []
        now = self.clock.now_ms()
        for slot in self.slots.values():
            if slot.config.strategy != name:
                continue
            samples.append(SmokeSample(
                slot=slot.id, symbol=slot.config.symbol, timeframe=slot.config.timeframe,
                params=dict(slot.config.params), candles=(), position=slot.position_qty,
                entry_price=slot.entry_price, state=dict(slot.strategy_state),
                state_schema=slot.state_schema,
            ))
        # Params are checked for every slot; the smoke evaluation runs on a few of them.
        _ = now
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
                version.baseline = module_state_fingerprint(version.modules)
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
                "config": s.config.model_dump(mode="json"),
            })
        ledger = self.ledger.summary()
        try:
            cash = self.broker.balances().get("USDT")
        except Exception:  # noqa: BLE001
            cash = None
        ledger["cash"] = cash
        ledger["equity"] = (cash + marked) if cash is not None else None
        ledger["unrealized_pnl"] = unrealized_total
        ledger["reconciled"] = {k: v for k, v in (self.reconciled or {}).items() if k != "orders"} or None
        lags = list(self._lags)
        waits = [w / 1000.0 for w in self._lock_waits_ns]
        halt = {k: v for k, v in self.halt.items() if k in ("engaged", "since", "reason", "cancelled_orders")}
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
        self.ledger.meta_set(clock_ms=self.clock.now_ms())
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


def _short_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)
