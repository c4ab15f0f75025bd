"""Canary and shadow deploys: the commands (``reload`` with ``slots`` or ``shadow``, ``promote``,
``rollback`` of one), checked on the tick thread, and their work on the reload thread: start one,
promote it, end it. command_handlers.py's table hands these commands here.

A canary or a shadow version is loaded and checked exactly as a reload's (Reloader.load_checked:
import rules, params of every slot, a smoke evaluation on live-shaped contexts, statelessness),
stored in the release store before it runs, then published beside the current version under the
reload lock (kernel/versions/registry.py). Nothing here runs during a halt: the halt is looked at
before the load (load_checked) and once more under the lock.

Each function returns the reload result recorded in status.json's ``reloads`` (and audited by the
console): ``canary_started``, ``shadow_started``, ``promoted``, ``canary_rolled_back``,
``shadow_discarded`` (or ``failed`` / ``abandoned`` / ``unchanged`` with the error).
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable

from .canary import CanaryRun, clear_canary_faults, parse_budget
from .errors import BadCommand, ReloadFailed
from .protocol import Command
from .reloader import Reloader
from .shadow import DEFAULT_SHADOW_CYCLES, ShadowRun
from .versions import SmokeSample, StrategyRegistry, StrategyVersion

__all__ = ["end_deploy", "promote", "promote_command", "refuse_while_deploying", "reload_deploy",
           "rollback_deploy", "start_deploy"]


def _result(registry: StrategyRegistry, name: str, command_id: str | None) -> dict[str, Any]:
    old = registry.get(name)
    return {"strategy": name, "command_id": command_id, "lock_wait_ms": None,
            "old_sha256": old.sha256 if old else None, "new_sha256": None, "error": None}


def _failed(r: dict, exc: ReloadFailed) -> dict:
    r.update(result="abandoned" if exc.stage in ("halted", "lock") else "failed", error=f"{exc.stage}: {exc}")
    return r


def start_deploy(reloader: Reloader, registry: StrategyRegistry, name: str, samples: list[SmokeSample], *,
                 kind: str, make_run: Callable[[StrategyVersion], Any], command_id: str | None,
                 by: str | None = None) -> dict:
    """A canary (``kind`` "canary", ``make_run`` builds its CanaryRun) or a shadow ("shadow", a
    ShadowRun) of the working tree's ``name``."""
    r = _result(registry, name, command_id)
    old = registry.get(name)
    try:
        version = reloader.load_checked(name, samples)
    except ReloadFailed as exc:
        return _failed(r, exc)
    r["new_sha256"] = version.sha256
    if old is not None and version.sha256 == old.sha256:
        version.unload()
        r.update(result="unchanged", version=old.number,
                 error=f"the working tree's {name} is the version running (v{old.number}): nothing to {kind}")
        return r
    run = make_run(version)
    try:
        reloader.publish(version, by=by, command_id=command_id)  # stored before it runs anywhere
        r["lock_wait_ms"] = registry.start_deploy(run, kind, should_stop=reloader.halted)
    except ReloadFailed as exc:
        version.unload()
        return _failed(r, exc)
    if kind == "shadow":
        run.start()
    r.update(result=f"{kind}_started", version=version.number, slots=sorted(run.slots))
    return r


def promote(reloader: Reloader, registry: StrategyRegistry, name: str, command_id: str | None) -> dict:
    """The running canary's or shadow's version current for every slot of ``name``."""
    r = _result(registry, name, command_id)
    old = registry.get(name)
    canary, shadow = registry.canary.get(name), registry.shadow.get(name)
    try:
        reloader.halted_check("the promote")
        if canary is not None:
            _, r["lock_wait_ms"] = registry.promote_canary(name, canary, should_stop=reloader.halted)
            canary.end("promoted")
            version = canary.version
        elif shadow is not None:
            r["lock_wait_ms"] = registry.swap(shadow.version, should_stop=reloader.halted)
            shadow.stop()
            registry.shadow.pop(name, None)
            version = shadow.version
        else:
            raise ReloadFailed("promote", f"nothing to promote: no canary or shadow of {name} runs")
    except ReloadFailed as exc:
        return _failed(r, exc)
    reloader.mark_current(version, old)
    r.update(result="promoted", version=version.number, new_sha256=version.sha256,
             kind="canary" if canary is not None else "shadow")
    return r


def end_deploy(reloader: Reloader, registry: StrategyRegistry, name: str, command_id: str | None) -> dict:
    """``rollback`` of a strategy with a canary or a shadow: the canary slots go back to the current
    version, or the shadow is discarded. Its version is dropped (a cycle holding it finishes)."""
    r = _result(registry, name, command_id)
    current = registry.get(name)
    canary, shadow = registry.canary.get(name), registry.shadow.get(name)
    try:
        if canary is not None:
            r["lock_wait_ms"] = registry.end_canary(name, canary)
            canary.end("rolled_back")
            run, result = canary, "canary_rolled_back"
        elif shadow is not None:
            shadow.stop()
            registry.shadow.pop(name, None)
            run, result = shadow, "shadow_discarded"
        else:
            raise ReloadFailed("rollback", f"no canary or shadow of {name} runs")
    except ReloadFailed as exc:
        return _failed(r, exc)
    run.version.unload()
    r.update(result=result, version=current.number if current else None,
             old_sha256=run.version.sha256, new_sha256=current.sha256 if current else None)
    return r


# ------------------------------------------------------------------ the commands (tick thread)

Work = tuple[Future, Callable[[Any], tuple[str, str | None, dict]]]


def refuse_while_deploying(registry: StrategyRegistry, names: list[str]) -> None:
    """A reload (or another canary or shadow) of a strategy with a canary or a shadow running is
    refused: promote it or roll it back first."""
    for name in names:
        for kind, runs in (("canary", registry.canary), ("shadow", registry.shadow)):
            if name in runs:
                raise BadCommand(f"a {kind} of {name} runs (v{runs[name].version.number}): promote it or roll "
                                 "it back first")


def _whole(raw: Any, what: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise BadCommand(f"{what} must be a whole number from {low} to {high}")
    return raw


def reload_deploy(ctx: Any, cmd: Command) -> Work | None:
    """``reload`` with ``slots`` (a canary, optional ``budget``) or ``"shadow": true`` (optional
    ``cycles``); None for a plain reload. ``ctx``: the CommandContext."""
    args = cmd.args
    slots_arg, shadow = args.get("slots"), args.get("shadow", False)
    if shadow not in (True, False):
        raise BadCommand("args.shadow must be true or false")
    if "budget" in args and slots_arg is None:
        raise BadCommand("args.budget goes with args.slots (a canary)")
    if "cycles" in args and not shadow:
        raise BadCommand("args.cycles goes with args.shadow")
    if slots_arg is None and not shadow:
        return None
    if slots_arg is not None and shadow:
        raise BadCommand("a reload is a canary (args.slots) or a shadow (args.shadow), not both")
    kind = "canary" if slots_arg is not None else "shadow"
    name = args.get("strategy")
    if not isinstance(name, str) or not name:
        raise BadCommand(f"a {kind} needs args.strategy")
    if not ctx.loader.exists(name):
        raise BadCommand(f"no strategy {name!r} in strategies/")
    if ctx.registry.get(name) is None:
        raise BadCommand(f"strategy {name} has no current version: a {kind} runs beside one; reload it first")
    refuse_while_deploying(ctx.registry, [name])
    of_strategy = [s.id for s in ctx.slots.values() if s.config.strategy == name]
    if kind == "canary":
        if not isinstance(slots_arg, list) or not slots_arg or not all(isinstance(s, str) for s in slots_arg):
            raise BadCommand("args.slots must be a non-empty list of slot ids")
        for sid in slots_arg:
            slot = ctx.slots.get(sid)
            if slot is None:
                raise BadCommand(f"unknown slot {sid!r}")
            if slot.config.strategy != name:
                raise BadCommand(f"slot {sid} runs {slot.config.strategy}, not {name}")
        chosen = sorted(set(slots_arg))
        try:
            budget = parse_budget(args.get("budget"))
        except ValueError as exc:
            raise BadCommand(str(exc)) from exc

        def make_run(v: StrategyVersion) -> CanaryRun:
            return CanaryRun(version=v, slots=frozenset(chosen), budget=budget, command_id=cmd.id)
    else:
        if not of_strategy:
            raise BadCommand(f"no slot runs {name}: nothing to shadow")
        cycles = _whole(args.get("cycles", DEFAULT_SHADOW_CYCLES), "args.cycles", 1, 100_000)

        def make_run(v: StrategyVersion) -> ShadowRun:
            return ShadowRun(v, of_strategy, cycles=cycles, feed=ctx.reloader.feed, halted=ctx.reloader.halted,
                             command_id=cmd.id)
    samples = ctx.reloader.smoke_samples(name)
    if kind == "canary":  # the smoke evaluation runs on the first slots: the canary's first
        samples.sort(key=lambda s: s.slot not in chosen)

    def work() -> dict:
        return start_deploy(ctx.reloader, ctx.registry, name, samples, kind=kind, make_run=make_run,
                            command_id=cmd.id, by=cmd.issued_by)

    def finish(r: dict) -> tuple[str, str | None, dict]:
        ctx.reloader.after_reload(r)
        if r["result"] != f"{kind}_started":
            return "rejected", f"{name}: {r['error']}", r
        return "applied", None, r

    return ctx.reloader.submit(work), finish


def promote_command(ctx: Any, cmd: Command) -> Work:
    name = cmd.args.get("strategy")
    if not isinstance(name, str) or not name:
        raise BadCommand("promote needs args.strategy")
    if set(cmd.args) - {"strategy"}:
        raise BadCommand("promote takes args.strategy only")
    if ctx.halt.engaged:
        raise BadCommand("halted: release the halt first, then promote")
    if name not in ctx.registry.canary and name not in ctx.registry.shadow:
        raise BadCommand(f"nothing to promote: no canary or shadow of {name} runs")

    def finish(r: dict) -> tuple[str, str | None, dict]:
        ctx.reloader.after_reload(r)
        if r["result"] != "promoted":
            return "rejected", f"{name}: {r['error']}", r
        if r.get("kind") == "shadow":  # as after a reload: a fault the old code left does not outlive it
            for s in ctx.slots.values():
                if s.config.strategy == name and s.fault and not s.paused and not s.busy:
                    s.fault = None
                    ctx.changes.mark_slot(s.id)
        return "applied", None, r

    return ctx.reloader.submit(lambda: promote(ctx.reloader, ctx.registry, name, cmd.id)), finish


def rollback_deploy(ctx: Any, cmd: Command, name: str) -> Work | None:
    """``rollback`` of a strategy with a canary or shadow running ends it; None when none runs."""
    if name not in ctx.registry.canary and name not in ctx.registry.shadow:
        return None
    if "version" in cmd.args or "sha256" in cmd.args:
        raise BadCommand(f"a canary or shadow of {name} runs: roll it back (rollback without a version) or "
                         "promote it first")

    def finish(r: dict) -> tuple[str, str | None, dict]:
        ctx.reloader.after_reload(r)
        if r["result"] not in ("canary_rolled_back", "shadow_discarded"):
            return "rejected", f"{name}: {r['error']}", r
        run = ctx.registry.last_canary.get(name)
        if r["result"] == "canary_rolled_back" and run is not None:
            clear_canary_faults(run, ctx.slots, ctx.changes)
        return "applied", None, r

    return ctx.reloader.submit(lambda: end_deploy(ctx.reloader, ctx.registry, name, cmd.id)), finish
