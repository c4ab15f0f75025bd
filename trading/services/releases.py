"""Releases (issue 11), the console's side: rollback to a stored version, a canary on chosen
slots with a fault budget, a shadow, promote, abort, and a reload of the whole fleet that
reports whether every kernel converged to one sha256.

Each is a command issued through :func:`~trading.services.commands.command_issue` (so
delivery, the "command.issued" event and the kernel's outcome are exactly those of a reload
today), after its own checks: the permission of the release step, a reason (required, for the
audit log), and the kernel's latest word (status synced first) so that a canary while another
runs, or a promote with nothing to promote, is refused before anything is written. Each also
records one "version.<step>" audit event with the reason, the wire arguments and the command
id; the kernel's answer is audited as for every command ("command.applied"/"command.rejected",
"reload.*" from status.json, including an automatic rollback).

Who may do what (services.permissions, services.roles):

- canary and shadow are reloads: ``operate_kernel`` (Operator). A canary has its fault budget
  (the kernel rolls it back by itself) and a shadow sends no order.
- rollback (to a version, or the previous one) and abort: ``rollback_strategy`` (Risk). An abort
  is a ``rollback`` on the wire: should the canary have ended on its own before the kernel reads
  the abort, it would roll the live version back, so it needs the rollback's role.
- promote: ``promote_strategy`` (Risk): the new version reaches every slot of the strategy.
- a fleet-wide reload: ``deploy_fleet`` (Risk), and ``operate_kernel`` on each kernel.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from kernel.protocol import STRATEGY_RE

from ..models import ControlCommand, Kernel, Slot
from ..release_status import running_release, strategy_state
from .actors import Actor
from .audit import audit_record
from .command_wait import command_wait
from .commands import command_issue
from .errors import Conflict, NotFound, ServiceError
from .kernels import status_sync
from .permissions import permission_check

REASON_MAX = 500
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Defaults the kernel applies when a canary or shadow names none (docs/control-plane.md).
BUDGET_MAX_CYCLES = 100_000
SHADOW_MAX_CYCLES = 100_000


# --------------------------------------------------------------------- checks


def _reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise ServiceError("a reason is required (it goes into the audit log)", errors={"reason": "required"})
    if len(text) > REASON_MAX:
        raise ServiceError(f"the reason is longer than {REASON_MAX} characters", errors={"reason": "too long"})
    return text


def _strategy(strategy: str) -> str:
    if not isinstance(strategy, str) or not STRATEGY_RE.match(strategy):
        raise ServiceError(f"invalid strategy name {strategy!r}", errors={"strategy": "invalid"})
    return strategy


def _latest(kernel: Kernel) -> dict[str, Any]:
    """The kernel's latest status (synced first: a refusal must rest on its current word)."""
    try:
        status_sync(kernel=kernel)
    except ServiceError:
        pass  # unreadable now: the kernel checks again anyway
    kernel.refresh_from_db()
    return kernel.status or {}


def _not_halted(kernel: Kernel, what: str) -> None:
    if kernel.halt_engaged or kernel.halt_requested_at is not None:
        raise Conflict(f"kernel {kernel.name} is halted: release the halt first, then {what}")


def _issue(*, kernel: Kernel, step: str, action: str, args: dict[str, Any], actor: Actor,
           reason: str) -> ControlCommand:
    """The command and its "version.<step>" audit event (the reason), in one transaction."""
    with transaction.atomic():
        command = command_issue(kernel=kernel, action=action, actor=actor, args=args)
        audit_record(
            action=f"version.{step}", actor=actor, kernel=kernel, command_id=command.command_id,
            outcome="issued", payload={"strategy": args.get("strategy"), "action": action, "args": args,
                                       "reason": reason},
        )
    return command


# --------------------------------------------------------------------- one kernel


def release_rollback(*, kernel: Kernel, strategy: str, actor: Actor, reason: str,
                     version: int | None = None, sha256: str | None = None) -> ControlCommand:
    """Roll ``strategy`` back to a stored version (its number or its sha256), or without either
    to the previous version. Checked against the kernel's store when this host can read it."""
    reason = _reason(reason)
    strategy = _strategy(strategy)
    permission_check(actor, "rollback")
    if version is not None and sha256:
        raise ServiceError("give a version number or a sha256, not both")
    args: dict[str, Any] = {"strategy": strategy}
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ServiceError("version must be a number from 1", errors={"version": "invalid"})
        args["version"] = version
    elif sha256:
        sha256 = sha256.strip().lower()
        if not SHA256_RE.match(sha256):
            raise ServiceError("sha256 must be 64 hex digits", errors={"sha256": "invalid"})
        args["sha256"] = sha256
    _latest(kernel)
    _not_halted(kernel, "roll back")
    if version is not None or sha256:
        _check_stored(kernel, strategy, version=version, sha256=sha256)
    return _issue(kernel=kernel, step="rollback", action="rollback", args=args, actor=actor, reason=reason)


def _check_stored(kernel: Kernel, strategy: str, *, version: int | None, sha256: str | None) -> None:
    """NotFound for a version the kernel's store does not hold, when this host can read it."""
    from ..release_reads import strategy_versions  # reads of the store; it imports services' errors

    listing = strategy_versions(kernel=kernel, strategy=strategy)
    if listing["store_error"]:
        return  # not readable from here (another host): the kernel checks it
    for v in listing["versions"]:
        if (version is not None and v["number"] == version) or (sha256 and v["sha256"] == sha256):
            return
    wanted = f"v{version}" if version is not None else f"sha256 {sha256[:12]}"
    raise NotFound(f"kernel {kernel.name} has no stored {wanted} of {strategy}")


def release_canary(*, kernel: Kernel, strategy: str, slots: list[str], actor: Actor, reason: str,
                   budget: dict[str, int] | None = None) -> ControlCommand:
    """Reload ``strategy`` on ``slots`` only (a canary), the others keep the current version;
    ``budget`` {"cycles": N, "faults": K} (the kernel's defaults when absent)."""
    reason = _reason(reason)
    strategy = _strategy(strategy)
    permission_check(actor, "reload")
    wanted = list(dict.fromkeys(slots or []))
    if not wanted:
        raise ServiceError("a canary needs at least one slot", errors={"slots": "required"})
    known = dict(Slot.objects.filter(kernel=kernel, slot_id__in=wanted).values_list("slot_id", "strategy"))
    missing = [s for s in wanted if s not in known]
    if missing:
        raise NotFound(f"kernel {kernel.name} has no slot {', '.join(missing)}", errors={"slots": "unknown slot"})
    others = [s for s in wanted if known[s] != strategy]
    if others:
        raise ServiceError(f"slot {', '.join(others)} does not run {strategy}", errors={"slots": "another strategy"})
    args: dict[str, Any] = {"strategy": strategy, "slots": wanted}
    if budget:
        args["budget"] = _budget(budget)
    _latest(kernel)
    _not_halted(kernel, "start a canary")
    _nothing_running(kernel, strategy)
    return _issue(kernel=kernel, step="canary", action="reload", args=args, actor=actor, reason=reason)


def _budget(budget: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, low in (("cycles", 1), ("faults", 0)):
        value = budget.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= BUDGET_MAX_CYCLES:
            raise ServiceError(f"budget.{key} must be a whole number from {low}", errors={f"budget.{key}": "invalid"})
        out[key] = value
    unknown = set(budget) - {"cycles", "faults"}
    if unknown:
        raise ServiceError(f"unknown budget field {', '.join(sorted(unknown))}", errors={"budget": "unknown field"})
    return out


def _nothing_running(kernel: Kernel, strategy: str) -> None:
    running = running_release(kernel, strategy)
    if running is not None:
        kind, entry = running
        raise Conflict(f"a {kind} of {strategy} runs on {kernel.name} (v{entry.get('version')}): "
                       "promote it or abort it first")


def release_shadow(*, kernel: Kernel, strategy: str, actor: Actor, reason: str,
                   cycles: int | None = None) -> ControlCommand:
    """Evaluate a new version of ``strategy`` beside the live one (no orders) for ``cycles``
    cycles per slot (the kernel's default when absent)."""
    reason = _reason(reason)
    strategy = _strategy(strategy)
    permission_check(actor, "reload")
    args: dict[str, Any] = {"strategy": strategy, "shadow": True}
    if cycles is not None:
        if isinstance(cycles, bool) or not isinstance(cycles, int) or not 1 <= cycles <= SHADOW_MAX_CYCLES:
            raise ServiceError("cycles must be a whole number from 1", errors={"cycles": "invalid"})
        args["cycles"] = cycles
    _latest(kernel)
    _not_halted(kernel, "start a shadow")
    _nothing_running(kernel, strategy)
    return _issue(kernel=kernel, step="shadow", action="reload", args=args, actor=actor, reason=reason)


def _running(kernel: Kernel, strategy: str, what: str) -> str:
    running = running_release(kernel, strategy)
    if running is not None:
        return running[0]
    raise Conflict(f"no canary or shadow of {strategy} runs on {kernel.name}: nothing to {what}")


def release_promote(*, kernel: Kernel, strategy: str, actor: Actor, reason: str) -> ControlCommand:
    """Make the canary (or shadow) version current for every slot of ``strategy``."""
    reason = _reason(reason)
    strategy = _strategy(strategy)
    permission_check(actor, "promote")
    _latest(kernel)
    _not_halted(kernel, "promote")
    _running(kernel, strategy, "promote")
    return _issue(kernel=kernel, step="promote", action="promote", args={"strategy": strategy}, actor=actor,
                  reason=reason)


def release_abort(*, kernel: Kernel, strategy: str, actor: Actor, reason: str) -> ControlCommand:
    """End a canary (its slots back to the current version) or discard a shadow: a rollback,
    refused unless one runs (never a rollback of the live version by mistake)."""
    reason = _reason(reason)
    strategy = _strategy(strategy)
    permission_check(actor, "rollback")
    _latest(kernel)
    _not_halted(kernel, "abort")
    _running(kernel, strategy, "abort")
    return _issue(kernel=kernel, step="abort", action="rollback", args={"strategy": strategy}, actor=actor,
                  reason=reason)


# --------------------------------------------------------------------- the fleet


@dataclass
class FleetKernel:
    """One kernel's share of a fleet-wide reload."""

    kernel: str
    command_id: str = ""
    status: str = ""  # the command's fate, or "refused" (nothing was written for it)
    error: str = ""
    version: int | None = None  # what the kernel reports running afterwards
    sha256: str = ""
    converged: bool = False


@dataclass
class FleetReload:
    strategy: str
    sha256: str  # the one sha256 the fleet should run (expected, or the most common one)
    converged: bool  # every kernel runs it
    kernels: list[FleetKernel] = field(default_factory=list)


def fleet_kernels(*, strategy: str) -> list[Kernel]:
    """The kernels that run ``strategy`` (they report it, or a slot of theirs is configured with it)."""
    names = set(Slot.objects.filter(strategy=strategy).values_list("kernel__name", flat=True))
    for kernel in Kernel.objects.all():
        if strategy_state(kernel, strategy):
            names.add(kernel.name)
    return list(Kernel.objects.filter(name__in=names).order_by("name"))


def fleet_reload(*, strategy: str, actor: Actor, reason: str, timeout_s: float,
                 kernel_names: list[str] | None = None, sha256: str | None = None) -> FleetReload:
    """Reload ``strategy`` on every kernel of the fleet that runs it (or on ``kernel_names``),
    wait up to ``timeout_s`` for all, and report per kernel the sha256 it runs now and whether
    it converged to the fleet's one sha256 (``sha256`` if given, else the one most kernels run).
    A kernel refused (halted, say) does not stop the others; each command commits on its own."""
    reason = _reason(reason)
    strategy = _strategy(strategy)
    permission_check(actor, "fleet.reload")
    if sha256:
        sha256 = sha256.strip().lower()
        if not SHA256_RE.match(sha256):
            raise ServiceError("sha256 must be 64 hex digits", errors={"sha256": "invalid"})
    if kernel_names:
        kernels = list(Kernel.objects.filter(name__in=kernel_names).order_by("name"))
        unknown = sorted(set(kernel_names) - {k.name for k in kernels})
        if unknown:
            raise NotFound(f"no kernel named {', '.join(unknown)}")
    else:
        kernels = fleet_kernels(strategy=strategy)
    if not kernels:
        raise NotFound(f"no kernel runs {strategy}")
    issued: list[tuple[FleetKernel, ControlCommand | None]] = []
    for kernel in kernels:
        row = FleetKernel(kernel=kernel.name)
        try:
            _latest(kernel)
            _not_halted(kernel, "reload")
            command = _issue(kernel=kernel, step="fleet_reload", action="reload", args={"strategy": strategy},
                             actor=actor, reason=reason)
            row.command_id = command.command_id
            issued.append((row, command))
        except ServiceError as exc:
            row.status, row.error = "refused", str(exc)
            issued.append((row, None))
    deadline = time.monotonic() + max(0.0, timeout_s)
    for row, command in issued:
        if command is not None:
            command = command_wait(command=command, timeout_s=max(deadline - time.monotonic(), 0.0))
            row.status, row.error = command.status, command.error
    for kernel, (row, _) in zip(kernels, issued):
        kernel.refresh_from_db()
        state = strategy_state(kernel, strategy)
        row.version, row.sha256 = state.get("version"), state.get("sha256") or ""
    target = sha256 or _most_common([row.sha256 for row, _ in issued if row.sha256])
    for row, _ in issued:
        row.converged = bool(target) and row.sha256 == target and row.status == ControlCommand.Status.APPLIED
    report = FleetReload(strategy=strategy, sha256=target, converged=all(r.converged for r, _ in issued),
                         kernels=[r for r, _ in issued])
    audit_record(
        action="fleet.reload", actor=actor, outcome="converged" if report.converged else "diverged",
        payload={"strategy": strategy, "reason": reason, "sha256": target,
                 "kernels": [r.__dict__ for r in report.kernels]},
    )
    return report


def _most_common(shas: list[str]) -> str:
    if not shas:
        return ""
    ranked = Counter(shas).most_common(2)
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return ""  # a tie: no one sha256 the fleet agrees on
    return ranked[0][0]
