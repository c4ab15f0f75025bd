"""The releases API (issue 11): a strategy's stored versions and their diff, rollback to a
version, canary, shadow, promote, abort; the fleet's drift and a fleet-wide reload.

Each endpoint is one service call (trading/services/releases.py) or one read
(trading/release_reads.py, through trading.selectors). Roles: reads need view_kernel; canary
and shadow operate_kernel (Operator); rollback and abort rollback_strategy, promote
promote_strategy, a fleet-wide reload deploy_fleet (Risk). Every write needs a reason.
"""
from __future__ import annotations

from ninja import Path, Query, Router

from kernel.protocol import STRATEGY_NAME_PATTERN

from . import selectors, services
from .api import _READ_ERRORS, _WRITE_ERRORS, MAX_WAIT_S, KernelName, Status, Wait, _accepted, _actor, _require
from .auth import API_AUTH
from .models import ControlCommand
from .release_schemas import (
    CanaryIn,
    DiffOut,
    FleetReloadIn,
    FleetReloadOut,
    FleetStrategyOut,
    ReasonIn,
    RollbackToIn,
    ShadowIn,
    VersionsOut,
)
from .schemas import CommandAcceptedOut, ErrorOut

Strategy = Path(..., pattern=STRATEGY_NAME_PATTERN, description="the strategy's module name, e.g. ema_cross")
VersionRef = Query(..., min_length=1, max_length=64, pattern=r"^(v?[0-9]{1,9}|[0-9a-f]{6,64})$",
                   description="a version number (3 or v3), or a sha256 or a prefix of 6+ hex digits")

releases_router = Router(auth=API_AUTH, tags=["releases"])
fleet_router = Router(auth=API_AUTH, tags=["releases"])


def _waited(command: ControlCommand, wait: float) -> Status:
    if wait > 0:
        command = services.command_wait(command=command, timeout_s=wait)
    return _accepted(command)


@releases_router.get("/{name}/strategies/{strategy}/versions", response={200: VersionsOut, **_READ_ERRORS},
                     operation_id="strategy_versions")
def strategy_versions(request, name: str = KernelName, strategy: str = Strategy):
    """The kernel's stored versions of the strategy, newest first (number, sha256, first loaded,
    by whom, git commit, which slots run it now), and what runs: version, working tree drift,
    canary, shadow."""
    _require(request, "trading.view_kernel")
    kernel = selectors.kernel_get(name)
    services.status_sync_if_stale(kernel=kernel)
    kernel.refresh_from_db()
    listing = selectors.strategy_versions(kernel=kernel, strategy=strategy)
    return Status(200, {**listing, "kernel": kernel.name})


@releases_router.get("/{name}/strategies/{strategy}/diff", response={200: DiffOut, 400: ErrorOut, **_READ_ERRORS},
                     operation_id="strategy_diff")
def strategy_diff(request, name: str = KernelName, strategy: str = Strategy, a: str = VersionRef,
                  b: str = VersionRef):
    """A unified diff, per file, from stored version ``a`` to ``b``."""
    _require(request, "trading.view_kernel")
    kernel = selectors.kernel_get(name)
    diff = selectors.version_diff(kernel=kernel, strategy=strategy, a=a, b=b)
    return Status(200, {**diff, "kernel": kernel.name})


@releases_router.post("/{name}/strategies/{strategy}/rollback", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                      operation_id="strategy_rollback")
def strategy_rollback(request, payload: RollbackToIn, name: str = KernelName, strategy: str = Strategy,
                      wait: float = Wait):
    """Back to a stored version (``version`` or ``sha256``), or to the previous one (Risk)."""
    command = services.release_rollback(kernel=selectors.kernel_get(name), strategy=strategy, actor=_actor(request),
                                        reason=payload.reason, version=payload.version, sha256=payload.sha256)
    return _waited(command, wait)


@releases_router.post("/{name}/strategies/{strategy}/canary", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                      operation_id="strategy_canary")
def strategy_canary(request, payload: CanaryIn, name: str = KernelName, strategy: str = Strategy,
                    wait: float = Wait):
    """Reload the strategy on the chosen slots only, with a fault budget (Operator)."""
    budget = payload.budget.model_dump(exclude_none=True) if payload.budget is not None else None
    command = services.release_canary(kernel=selectors.kernel_get(name), strategy=strategy, slots=payload.slots,
                                      actor=_actor(request), reason=payload.reason, budget=budget)
    return _waited(command, wait)


@releases_router.post("/{name}/strategies/{strategy}/shadow", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                      operation_id="strategy_shadow")
def strategy_shadow(request, payload: ShadowIn, name: str = KernelName, strategy: str = Strategy,
                    wait: float = Wait):
    """Evaluate a new version beside the live one, sending no order (Operator)."""
    command = services.release_shadow(kernel=selectors.kernel_get(name), strategy=strategy, actor=_actor(request),
                                      reason=payload.reason, cycles=payload.cycles)
    return _waited(command, wait)


@releases_router.post("/{name}/strategies/{strategy}/promote", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                      operation_id="strategy_promote")
def strategy_promote(request, payload: ReasonIn, name: str = KernelName, strategy: str = Strategy,
                     wait: float = Wait):
    """Make the canary (or shadow) version current for every slot of the strategy (Risk)."""
    command = services.release_promote(kernel=selectors.kernel_get(name), strategy=strategy, actor=_actor(request),
                                       reason=payload.reason)
    return _waited(command, wait)


@releases_router.post("/{name}/strategies/{strategy}/abort", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                      operation_id="strategy_abort")
def strategy_abort(request, payload: ReasonIn, name: str = KernelName, strategy: str = Strategy,
                   wait: float = Wait):
    """End a canary or discard a shadow (409 unless one runs) (Risk)."""
    command = services.release_abort(kernel=selectors.kernel_get(name), strategy=strategy, actor=_actor(request),
                                     reason=payload.reason)
    return _waited(command, wait)


@fleet_router.get("/strategies", response={200: list[FleetStrategyOut], **_READ_ERRORS},
                  operation_id="fleet_strategies")
def fleet_strategies(request):
    """Per strategy, the sha256 each kernel runs, and drift (kernels apart, working tree differs)."""
    _require(request, "trading.view_kernel")
    return Status(200, list(selectors.fleet_strategies().values()))


@fleet_router.post("/strategies/{strategy}/reload", response={200: FleetReloadOut, **_WRITE_ERRORS},
                   operation_id="fleet_reload")
def fleet_reload(request, payload: FleetReloadIn, strategy: str = Strategy, wait: float = Wait):
    """Reload the strategy on every kernel that runs it (or on ``kernels``), wait up to ``wait``
    seconds, and say per kernel which sha256 it runs now and whether it converged (Risk)."""
    report = services.fleet_reload(strategy=strategy, actor=_actor(request), reason=payload.reason,
                                   timeout_s=min(wait, MAX_WAIT_S), kernel_names=payload.kernels,
                                   sha256=payload.sha256)
    return Status(200, report)


def add_routers(api) -> None:
    api.add_router("/kernels", releases_router)
    api.add_router("/fleet", fleet_router)
