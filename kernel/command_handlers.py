"""What each control-plane action does: one handler per action, in one table.

A handler either finishes at once (returns the result's detail) or hands back a
:class:`Deferred`: work running elsewhere (the reload thread, a slot's worker) and what
to do with its result on the tick thread. A rejection is :class:`~kernel.errors.BadCommand`;
its message is what the operator reads.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from pydantic import ValidationError

from .changes import Changes
from .clock import Clock
from .control_watch import ControlWatch
from .cycles import Cycles
from .deploys import promote_command, refuse_while_deploying, reload_deploy, rollback_deploy
from .errors import BadCommand, ReloadFailed, format_validation_error
from .execution import Execution
from .halt import HaltController
from .ledger import Ledger
from .protocol import ACTIONS, SLOT_ACTIONS, Command, SlotConfig
from .reloader import Reloader, reload_message
from .run_state import RunState
from .scheduler import Scheduler
from .slot_runtime import SlotRuntime
from .versions import SmokeSample, StrategyLoader, StrategyRegistry, StrategyVersion
from .workers import Job

__all__ = ["CommandContext", "Deferred", "HANDLERS", "apply_command"]

Finish = Callable[[Any], tuple[str, str | None, dict | None]]


class Deferred(NamedTuple):
    """A command still running: ``finish`` turns its future's result into
    (result, error, detail) on the tick thread."""

    future: Future
    finish: Finish


@dataclass
class CommandContext:
    """The parts of the kernel that commands act on."""

    slots: dict[str, SlotRuntime]
    run_state: RunState
    halt: HaltController
    control: ControlWatch
    scheduler: Scheduler
    clock: Clock
    ledger: Ledger
    loader: StrategyLoader
    registry: StrategyRegistry
    reloader: Reloader
    execution: Execution
    cycles: Cycles
    changes: Changes


Handler = Callable[[CommandContext, Command], dict | Deferred]


def apply_command(ctx: CommandContext, cmd: Command) -> dict | Deferred:
    action = cmd.action
    if action not in ACTIONS:
        raise BadCommand(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    if action not in SLOT_ACTIONS and cmd.slot is not None:
        raise BadCommand(f"{action} is a kernel action and takes no slot")
    return HANDLERS[action](ctx, cmd)


# ------------------------------------------------------------------ kernel actions


def _start(ctx: CommandContext, cmd: Command) -> dict:
    if ctx.run_state.running:
        return {"note": "already running"}
    ctx.run_state.running = True
    ctx.scheduler.reset(ctx.clock.now_ms())
    return {}


def _stop(ctx: CommandContext, cmd: Command) -> dict:
    if not ctx.run_state.running:
        return {"note": "already stopped"}
    ctx.run_state.running = False
    return {}


def _pause(ctx: CommandContext, cmd: Command) -> dict:
    ctx.run_state.paused = True
    return {}


def _resume(ctx: CommandContext, cmd: Command) -> dict:
    if ctx.halt.engaged:
        raise BadCommand("halted: release the halt first, then resume")
    ctx.run_state.paused = False
    return {}


def _release(ctx: CommandContext, cmd: Command) -> dict:
    if not ctx.halt.engaged:
        raise BadCommand("not halted")
    if ctx.control.halt:
        raise BadCommand("control.json still asks for a halt: write halt false together with the release")
    released = ctx.halt.release()
    ctx.run_state.paused = True  # after a release the kernel stays paused until someone resumes it
    ctx.ledger.meta_set(halt=ctx.halt.state.as_dict(), paused=True)
    ctx.scheduler.reset(ctx.clock.now_ms())
    return {"released": released, "note": "kernel paused: resume to trade"}


def _refuse_during_halt(ctx: CommandContext, what: str) -> None:
    """Reloads, rollbacks and first loads are refused during a halt: no strategy code runs
    (import, params, smoke run, migrate_state), and no version changes under a halted kernel."""
    if ctx.halt.engaged:
        raise BadCommand(f"halted: release the halt first, then {what}")


def _reload(ctx: CommandContext, cmd: Command) -> Deferred:
    _refuse_during_halt(ctx, "reload")
    deploy = reload_deploy(ctx, cmd)  # a canary (args.slots) or a shadow (args.shadow): kernel/deploys.py
    if deploy is not None:
        return Deferred(*deploy)
    name = cmd.args.get("strategy")
    if name is not None:
        if not isinstance(name, str) or not ctx.loader.exists(name):
            raise BadCommand(f"no strategy {name!r} in strategies/")
        names = [name]
    else:
        names = sorted(ctx.registry.current) or sorted({s.config.strategy for s in ctx.slots.values()})
    refuse_while_deploying(ctx.registry, names)
    samples = {n: ctx.reloader.smoke_samples(n) for n in names}

    def work() -> list[dict]:
        return [ctx.reloader.reload_one(n, samples[n], cmd.id, by=cmd.issued_by) for n in names]

    def finish(results: list[dict]) -> tuple[str, str | None, dict]:
        for r in results:
            ctx.reloader.after_reload(r)
        failed = [r for r in results if r["result"] in ("failed", "abandoned")]
        detail = {"strategies": results, "message": "; ".join(reload_message(r) for r in results)}
        if failed:
            return "rejected", "; ".join(f"{r['strategy']}: {r['error']}" for r in failed), detail
        return "applied", None, detail

    return Deferred(ctx.reloader.submit(work), finish)


def _rollback(ctx: CommandContext, cmd: Command) -> Deferred:
    name = cmd.args.get("strategy")
    if not isinstance(name, str) or not name:
        raise BadCommand("rollback needs args.strategy")
    _refuse_during_halt(ctx, "roll back")
    deploy = rollback_deploy(ctx, cmd, name)  # ends a canary or discards a shadow: kernel/deploys.py
    if deploy is not None:
        return Deferred(*deploy)
    if "version" in cmd.args or "sha256" in cmd.args:
        if "version" in cmd.args and "sha256" in cmd.args:
            raise BadCommand("rollback takes args.version or args.sha256, not both")
        kind = "version" if "version" in cmd.args else "sha256"
        return _rollback_to(ctx, cmd, name, cmd.args[kind], "number" if kind == "version" else kind)
    if name not in ctx.registry.current:
        raise BadCommand(f"strategy {name!r} is not loaded")
    if name not in ctx.registry.previous:
        # After a restart the previous version is not in memory: the store has it.
        stored = (ctx.reloader.store.current().get(name) or {}).get("previous") if ctx.reloader.store else None
        if stored and ctx.reloader.store.has(stored):
            return _rollback_to(ctx, cmd, name, stored, "sha256")
        raise BadCommand(f"no previous version of {name} to roll back to")

    def work() -> dict:
        ctx.reloader.halted_check("the rollback")  # a halt that landed while it was queued
        old = ctx.registry.get(name)
        cur, prev, waited = ctx.registry.rollback(name)
        ctx.reloader.mark_current(cur, prev)  # what a restart resumes
        r = {"strategy": name, "result": "rolled_back", "error": None, "lock_wait_ms": waited,
             "old_sha256": old.sha256 if old else None, "new_sha256": cur.sha256,
             "old_version": old.number if old else None, "version": cur.number, "command_id": cmd.id}
        return {**r, "message": reload_message(r)}

    def finish(r: dict) -> tuple[str, None, dict]:
        ctx.reloader.after_reload(r)
        return "applied", None, r

    return Deferred(ctx.reloader.submit(work), finish)


def _rollback_to(ctx: CommandContext, cmd: Command, name: str, ref: Any, kind: str) -> dict | Deferred:
    """Back to a stored version (by number or sha256), after a restart too: loaded from the
    release store (its entry verified first), checked like a reload, swapped."""
    store = ctx.reloader.store
    if store is None:
        raise BadCommand("this kernel keeps no release store")
    try:
        manifest = store.resolve(name, ref, kind=kind)
    except ReloadFailed as exc:
        raise BadCommand(str(exc)) from exc
    sha = manifest["sha256"]
    cur = ctx.registry.get(name)
    if cur is not None and cur.sha256 == sha:
        return {"note": f"{name} already runs version {cur.number}", "version": cur.number, "sha256": sha}
    samples = ctx.reloader.smoke_samples(name)

    def work() -> dict:
        return ctx.reloader.reload_one(name, samples, cmd.id, by=cmd.issued_by, stored=sha)

    def finish(r: dict) -> tuple[str, str | None, dict]:
        ctx.reloader.after_reload(r)
        if r["result"] != "rolled_back":
            return "rejected", f"{name}: {r['error']}", r
        return "applied", None, r

    return Deferred(ctx.reloader.submit(work), finish)


def _versions_prune(ctx: CommandContext, cmd: Command) -> Deferred:
    """Stored versions beyond the newest ``keep`` (default --keep-versions) per strategy are
    removed, never one a slot, the registry or the ledger's meta still references."""
    store = ctx.reloader.store
    if store is None:
        raise BadCommand("this kernel keeps no release store")
    unknown = set(cmd.args) - {"strategy", "keep"}
    if unknown:
        raise BadCommand(f"versions.prune takes args strategy and keep, not {', '.join(sorted(unknown))}")
    strategy, keep = cmd.args.get("strategy"), cmd.args.get("keep")
    if strategy is not None and not isinstance(strategy, str):
        raise BadCommand("args.strategy must be a strategy name")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise BadCommand("args.keep must be an integer >= 1")
    protected = {v.sha256 for v in list(ctx.registry.current.values()) + list(ctx.registry.previous.values())}
    protected |= {s.last_cycle_sha256 for s in ctx.slots.values() if s.last_cycle_sha256}
    protected |= {r.version.sha256 for r in [*ctx.registry.canary.values(), *ctx.registry.shadow.values()]}
    protected |= {run.version.sha256 for runs in (ctx.registry.canary, ctx.registry.shadow) for run in runs.values()}

    def work() -> dict:
        return store.prune(strategy=strategy, keep=keep, protected=protected)

    return Deferred(ctx.reloader.submit(work), lambda r: ("applied", None, r))


# ------------------------------------------------------------------ slot actions


def _slot_for(ctx: CommandContext, cmd: Command) -> SlotRuntime:
    if not cmd.slot:
        raise BadCommand(f"{cmd.action} needs a slot")
    slot = ctx.slots.get(cmd.slot)
    if slot is None:
        raise BadCommand(f"unknown slot {cmd.slot!r}")
    return slot


def _slot_pause(ctx: CommandContext, cmd: Command) -> dict:
    slot = _slot_for(ctx, cmd)
    slot.paused = True
    ctx.changes.mark_slot(slot.id)
    return {}


def _slot_resume(ctx: CommandContext, cmd: Command) -> dict:
    slot = _slot_for(ctx, cmd)
    if ctx.halt.engaged:
        raise BadCommand("halted: release the halt first")
    if not ctx.registry.get(slot.config.strategy):
        raise BadCommand(f"strategy {slot.config.strategy} has no loaded version: reload it first")
    cleared = slot.fault
    slot.paused = False
    slot.fault = None
    ctx.changes.mark_slot(slot.id)
    return {"cleared_fault": cleared} if cleared else {}


def _slot_flatten(ctx: CommandContext, cmd: Command) -> Deferred:
    slot = _slot_for(ctx, cmd)
    slot.paused = True  # so the strategy does not re-enter at its next cycle
    ctx.changes.mark_slot(slot.id)
    fut: Future = Future()

    def run(job: Job) -> dict:
        return ctx.execution.flatten(slot, command_id=cmd.id)

    ctx.cycles.submit_flatten(slot, run, fut)

    def finish(r: dict) -> tuple[str, str | None, dict]:
        r = {**r, **flatten_outcome(ctx.ledger, slot.id, r)}
        if r.get("error"):
            return "rejected", r["error"], r
        return "applied", None, r

    return Deferred(fut, finish)


def flatten_outcome(ledger: Ledger, slot_id: str, r: dict) -> dict:
    """What the operator reads of a flatten: the fill price (quantity-weighted over its fills)
    and the realised P&L of the round trip it closed (entry and exit fees included, as the
    ledger books it: kernel/round_trips.py). None where the broker has not told yet."""
    cid = r.get("client_order_id")
    if not cid:
        return {}  # no order was sent (no position): its note says so
    fills = [f for f in ledger.fills(slot_id) if cid and f["client_order_id"] == cid]
    qty = sum(f["qty"] for f in fills)
    price = sum(f["qty"] * f["price"] for f in fills) / qty if qty > 0 else r.get("avg_price")
    closed = [f["round_trip_pnl"] for f in fills if f.get("round_trip_pnl") is not None]
    pnl = sum(closed) if closed else None
    if r.get("error"):
        message = f"flatten {slot_id} rejected: {r['error']}"
    elif not fills:
        message = f"{slot_id}: flatten order {r.get('status')}, no fill known yet"
    else:
        message = (f"{slot_id}: sold {qty:.10g} at {price:.10g}; round trip P&L "
                   f"{'not known yet' if pnl is None else f'{pnl:+.10g}'}")
    return {"fill_price": price if fills else None, "filled_qty": qty if fills else r.get("filled_qty"),
            "realized_pnl": pnl, "message": message}


def _slot_configure(ctx: CommandContext, cmd: Command) -> dict | Deferred:
    slot = _slot_for(ctx, cmd)
    args = dict(cmd.args)
    args.pop("id", None)
    merged = {**slot.config.model_dump(mode="json"), **args, "id": slot.id}
    try:
        cfg = SlotConfig.model_validate(merged)
    except ValidationError as exc:
        raise BadCommand(f"invalid slot config: {format_validation_error(exc)}") from exc
    if ctx.halt.engaged:
        # No strategy code during a halt, not even its params' validators: a risk setting or
        # `enabled` may change, the strategy and its params may not.
        if cfg.strategy == slot.config.strategy and cfg.params == slot.config.params:
            return _configure(ctx, slot, cfg)
        _refuse_during_halt(ctx, "change the slot's strategy or params")
    return _with_strategy(ctx, cfg, lambda: _configure(ctx, slot, cfg))


def _slot_add(ctx: CommandContext, cmd: Command) -> dict | Deferred:
    args = dict(cmd.args)
    if cmd.slot and args.get("id", cmd.slot) != cmd.slot:
        raise BadCommand("slot and args.id disagree")
    args.setdefault("id", cmd.slot)
    try:
        cfg = SlotConfig.model_validate(args)
    except ValidationError as exc:
        raise BadCommand(f"invalid slot config: {format_validation_error(exc)}") from exc
    if cfg.id in ctx.slots:
        raise BadCommand(f"slot {cfg.id!r} exists; use slot.configure")
    _refuse_during_halt(ctx, "add the slot")
    return _with_strategy(ctx, cfg, lambda: _add_slot(ctx, cfg))


def _with_strategy(ctx: CommandContext, cfg: SlotConfig, apply: Callable[[], dict]) -> dict | Deferred:
    """Check cfg.params against the strategy's params model, loading it first (on the
    reload thread) if no version of it runs yet."""
    if not ctx.loader.exists(cfg.strategy):
        raise BadCommand(f"no strategy {cfg.strategy!r} in strategies/")
    version = ctx.registry.get(cfg.strategy)
    if version is not None:
        _validate_params(version, cfg)
        return apply()

    # A first load passes the same checks as a reload: this slot's params, and a smoke
    # evaluation on its recent candles (with the state and position it will start from).
    existing = ctx.slots.get(cfg.id)
    keeps_state = existing is not None and existing.config.strategy == cfg.strategy
    sample = SmokeSample(
        slot=cfg.id, symbol=cfg.symbol, timeframe=cfg.timeframe, params=dict(cfg.params),
        position=existing.position_qty if existing else 0.0,
        entry_price=existing.entry_price if existing else None,
        state=dict(existing.strategy_state) if keeps_state else {},
        state_schema=existing.state_schema if keeps_state else None,
        entries_allowed=ctx.execution.entries_allowed(existing or SlotRuntime(config=cfg)),
    )

    def work() -> dict:
        return ctx.reloader.reload_one(cfg.strategy, [sample], None)

    def finish(r: dict) -> tuple[str, str | None, dict]:
        ctx.reloader.after_reload(r)
        v = ctx.registry.get(cfg.strategy)
        if v is None:
            raise BadCommand(f"strategy {cfg.strategy} did not load: {r.get('error')}")
        _validate_params(v, cfg)
        return "applied", None, apply()

    return Deferred(ctx.reloader.submit(work), finish)


def _validate_params(version: StrategyVersion, cfg: SlotConfig) -> None:
    try:
        version.params(cfg.params)
    except ValidationError as exc:
        raise BadCommand(f"invalid params for {cfg.strategy}: {format_validation_error(exc)}") from exc


def _configure(ctx: CommandContext, slot: SlotRuntime, cfg: SlotConfig) -> dict:
    slot.pending_config = cfg
    ctx.changes.mark_slot(slot.id)
    if not slot.busy:
        slot.apply_pending_config(scheduler=ctx.scheduler, clock=ctx.clock, changes=ctx.changes)
    return {"config": cfg.model_dump(mode="json")}


def _add_slot(ctx: CommandContext, cfg: SlotConfig) -> dict:
    ctx.slots[cfg.id] = SlotRuntime(config=cfg)
    ctx.scheduler.add(cfg.id, cfg.timeframe, ctx.clock.now_ms())
    ctx.changes.mark_slot(cfg.id)
    return {"config": cfg.model_dump(mode="json")}


HANDLERS: dict[str, Handler] = {
    "start": _start,
    "stop": _stop,
    "pause": _pause,
    "resume": _resume,
    "reload": _reload,
    "rollback": _rollback,
    "release": _release,
    "versions.prune": _versions_prune,
    "promote": lambda ctx, cmd: Deferred(*promote_command(ctx, cmd)),
    "slot.pause": _slot_pause,
    "slot.resume": _slot_resume,
    "slot.flatten": _slot_flatten,
    "slot.configure": _slot_configure,
    "slot.add": _slot_add,
}
