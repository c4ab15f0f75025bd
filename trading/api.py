"""The console's REST API (django-ninja routers; added to the NinjaAPI in foresight_site/api.py).

Each endpoint translates a request into one service call. Permissions are the admin's
(services.required_permission); reads need the model's view permission. Errors raised by
the services become JSON ``{"detail": ...}`` with their status code (see foresight_site/api.py).
"""
from __future__ import annotations

from typing import Optional

from django.conf import settings
from django.http import HttpRequest
from ninja import Path, Query, Router

try:
    from ninja import Status
except ImportError:  # django-ninja < 1.5 takes a (status, body) tuple
    def Status(status_code, value):  # noqa: N802
        return status_code, value

from kernel.protocol import COMMAND_ID_PATTERN, SLOT_ID_PATTERN

from . import selectors, services
from .auth import API_AUTH, session_auth
from .cached_token_auth import CACHED_API_AUTH
from .services.command_feedback import command_feedback
from .status_body import status_response
from .models import ControlCommand
from .schemas import (
    NAME_PATTERN,
    AuditEventOut,
    AuditFilters,
    AuditPageOut,
    CommandAcceptedOut,
    CommandOut,
    ErrorOut,
    FleetHealthOut,
    HaltIn,
    KernelDetailOut,
    KernelOut,
    ReleaseIn,
    ReloadIn,
    RollbackIn,
    SlotConfigPatchIn,
    SlotOut,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
)

# A request that waits holds a web server thread all that time: the cap keeps waits short, so
# that a halt never waits long for a thread (foresight_site/gunicorn.conf.py). Read at start-up:
# it is part of the API's schema.
MAX_WAIT_S = settings.FORESIGHT_API_MAX_WAIT_S

_READ_ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut}
_WRITE_ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut,
                 503: ErrorOut}

KernelName = Path(..., pattern=NAME_PATTERN, description="the kernel's name")
SlotId = Path(..., pattern=SLOT_ID_PATTERN, description="the slot's id, e.g. btc-5m")
Wait = Query(0.0, ge=0, le=MAX_WAIT_S,
             description=f"seconds to wait for the kernel's answer (at most {MAX_WAIT_S:g}, FORESIGHT_API_MAX_WAIT_S); "
                         "a halt answers at once without it")

kernels_router = Router(auth=API_AUTH, tags=["kernels"])
slots_router = Router(auth=API_AUTH, tags=["slots"])
commands_router = Router(auth=API_AUTH, tags=["commands"])
audit_router = Router(auth=API_AUTH, tags=["audit"])
tokens_router = Router(auth=API_AUTH, tags=["tokens"])
health_router = Router(auth=None, tags=["health"])


def _require(request: HttpRequest, perm: str) -> None:
    user = request.auth
    if not user.has_perm(perm):
        raise services.NotAllowed(f"{user.get_username()} may not do this (needs the {perm.split('.', 1)[1]} permission)")


def _actor(request: HttpRequest) -> services.Actor:
    return services.Actor.from_request(request, "api")


def _accepted(command: ControlCommand, *, audit: str = "recorded") -> Status:
    return Status(202, {
        "command_id": command.command_id,
        "kernel": command.kernel.name,
        "action": command.action,
        "slot_id": command.slot_id,
        "status": command.status,
        "error": command.error,
        "detail": command.detail if isinstance(command.detail, dict) else None,
        "message": command_feedback(command=command),
        "audit": audit,
    })


def _issue(request, name: str, action: str, wait: float, *, slot_id: str | None = None,
           args: dict | None = None) -> Status:
    kernel = selectors.kernel_get(name)
    command = services.command_issue(kernel=kernel, action=action, actor=_actor(request), slot_id=slot_id,
                                     args=args)
    if wait > 0:
        command = services.command_wait(command=command, timeout_s=wait)
    return _accepted(command)


# ===================================================================== kernels


@kernels_router.get("", response={200: list[KernelOut], **_READ_ERRORS}, operation_id="kernel_list")
def kernel_list(request):
    """Every kernel the console knows, with what it last reported."""
    _require(request, "trading.view_kernel")
    return Status(200, list(selectors.kernel_list()))


@kernels_router.get("/{name}", response={200: KernelDetailOut, 304: None, **_READ_ERRORS},
                    operation_id="kernel_status", auth=CACHED_API_AUTH)
def kernel_status(request, name: str = KernelName):
    """The kernel's mirror and its last status.json, synced first unless synced in the last second.
    Prepared bytes with an ETag: 304 to a matching If-None-Match (trading/status_body.py); a token
    is verified once per 5 s per worker (trading/cached_token_auth.py)."""
    _require(request, "trading.view_kernel")
    return status_response(request=request, name=name)


def _kernel_action(action: str, doc: str):
    def endpoint(request, name: str = KernelName, wait: float = Wait):
        return _issue(request, name, action, wait)

    endpoint.__doc__ = doc
    endpoint.__name__ = f"kernel_{action}"
    kernels_router.post(f"/{{name}}/{action}", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                        operation_id=f"kernel_{action}")(endpoint)


_kernel_action("start", "Turn the scheduler on: cycles run again.")
_kernel_action("stop", "Turn the scheduler off: no cycles run (the process stays up).")
_kernel_action("pause", "No new entries; exits are still evaluated.")
_kernel_action("resume", "Allow entries again (409 while halted: release first).")


@kernels_router.post("/{name}/reload", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                     operation_id="kernel_reload")
def kernel_reload(request, name: str = KernelName, wait: float = Wait, payload: Optional[ReloadIn] = None):
    """Load, check and swap in a new version of one strategy (or of all loaded ones)."""
    args = {"strategy": payload.strategy} if payload is not None and payload.strategy else {}
    return _issue(request, name, "reload", wait, args=args)


@kernels_router.post("/{name}/rollback", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                     operation_id="kernel_rollback")
def kernel_rollback(request, payload: RollbackIn, name: str = KernelName, wait: float = Wait):
    """Go back to the strategy's previous version."""
    return _issue(request, name, "rollback", wait, args={"strategy": payload.strategy})


@kernels_router.post("/{name}/halt", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                     operation_id="kernel_halt")
def kernel_halt(request, payload: HaltIn, name: str = KernelName, wait: float = Wait):
    """EMERGENCY HALT: written straight into control.json, before anything touches the database.
    ``audit`` says "spooled" when the database was unavailable (the halt is written all the same)."""
    kernel = selectors.kernel_get(name)
    command = services.halt_engage(kernel=kernel, actor=_actor(request), reason=payload.reason)
    if command is None:
        halted = wait > 0 and services.halt_wait(state_dir=kernel.state_dir, timeout_s=wait) is not None
        return Status(202, {"command_id": None, "kernel": kernel.name, "action": "halt", "slot_id": "",
                     "status": "applied" if halted else "delivered", "error": "", "detail": None,
                     "audit": "spooled"})
    if wait > 0:
        command = services.command_wait(command=command, timeout_s=wait)
    return _accepted(command)


@kernels_router.post("/{name}/release", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                     operation_id="kernel_release")
def kernel_release(request, name: str = KernelName, wait: float = Wait, payload: Optional[ReleaseIn] = None):
    """Release a latched halt (409 unless the kernel reports halted). The kernel stays paused
    until someone resumes it. An optional ``reason`` goes into the audit log."""
    kernel = selectors.kernel_get(name)
    command = services.halt_release(kernel=kernel, actor=_actor(request),
                                    reason=(payload.reason or "") if payload is not None else "")
    if wait > 0:
        command = services.command_wait(command=command, timeout_s=wait)
    return _accepted(command)


# ===================================================================== slots


@slots_router.get("/{name}/slots", response={200: list[SlotOut], **_READ_ERRORS}, operation_id="slot_list")
def slot_list(request, name: str = KernelName):
    _require(request, "trading.view_slot")
    return Status(200, list(selectors.slot_list(selectors.kernel_get(name))))


@slots_router.get("/{name}/slots/{slot_id}", response={200: SlotOut, **_READ_ERRORS}, operation_id="slot_get")
def slot_get(request, name: str = KernelName, slot_id: str = SlotId):
    _require(request, "trading.view_slot")
    return Status(200, selectors.slot_get(selectors.kernel_get(name), slot_id))


@slots_router.patch("/{name}/slots/{slot_id}/config", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                    operation_id="slot_configure")
def slot_configure(request, payload: SlotConfigPatchIn, name: str = KernelName, slot_id: str = SlotId,
                   wait: float = Wait):
    """Change a slot's configuration (checked against the strategy's params), then send
    slot.configure with the whole new config; the kernel applies it at the slot's next cycle."""
    slot = selectors.slot_get(selectors.kernel_get(name), slot_id)
    command = services.slot_configure(slot=slot, changes=payload.model_dump(exclude_unset=True),
                                      actor=_actor(request))
    if wait > 0:
        command = services.command_wait(command=command, timeout_s=wait)
    return _accepted(command)


def _slot_action(action: str, doc: str):
    verb = action.split(".", 1)[1]

    def endpoint(request, name: str = KernelName, slot_id: str = SlotId, wait: float = Wait):
        selectors.slot_get(selectors.kernel_get(name), slot_id)
        return _issue(request, name, action, wait, slot_id=slot_id)

    endpoint.__doc__ = doc
    endpoint.__name__ = f"slot_{verb}"
    slots_router.post(f"/{{name}}/slots/{{slot_id}}/{verb}", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                      operation_id=f"slot_{verb}")(endpoint)


_slot_action("slot.pause", "This slot takes no new entries (exits still run).")
_slot_action("slot.resume", "This slot trades again; a fault on it is cleared.")
_slot_action("slot.flatten", "Close this slot's position and pause the slot (allowed during a halt).")


# ===================================================================== commands


@commands_router.get("/{command_id}", response={200: CommandOut, **_READ_ERRORS}, operation_id="command_get")
def command_get(request, command_id: str = Path(..., pattern=COMMAND_ID_PATTERN)):
    """A command's fate: pending, delivered, applied or rejected (with the kernel's reason), failed, expired."""
    _require(request, "trading.view_controlcommand")
    return Status(200, services.command_refresh(command=selectors.command_get(command_id)))


# ===================================================================== audit


@audit_router.get("", response={200: AuditPageOut, **_READ_ERRORS}, operation_id="audit_list")
def audit_list(request, filters: AuditFilters = Query(...)):
    """The append-only audit log, newest first. There is no way to change or delete an event."""
    _require(request, "trading.view_auditevent")
    return Status(200, selectors.audit_page(offset=filters.offset, limit=filters.limit, action=filters.action,
                                            actor=filters.actor, kernel=filters.kernel, slot=filters.slot,
                                            command_id=filters.command_id, since=filters.since,
                                            until=filters.until))


@audit_router.get("/{event_id}", response={200: AuditEventOut, **_READ_ERRORS}, operation_id="audit_get")
def audit_get(request, event_id: int = Path(..., ge=1, le=2**62)):
    _require(request, "trading.view_auditevent")
    return Status(200, selectors.audit_get(event_id))


# ===================================================================== tokens


@tokens_router.post("", auth=session_auth, response={201: TokenCreatedOut, **_WRITE_ERRORS},
                    operation_id="token_create")
def token_create(request, payload: TokenIn):
    """A new API token for the logged-in user (session login only). The token is shown once."""
    token, raw = services.token_create(user=request.auth, name=payload.name, actor=_actor(request))
    token.token = raw
    return Status(201, token)


@tokens_router.get("", response={200: list[TokenOut], **_READ_ERRORS}, operation_id="token_list")
def token_list(request):
    """Your own tokens (never their secrets)."""
    return Status(200, list(selectors.token_list(request.auth)))


@tokens_router.delete("/{token_id}", response={204: None, **_WRITE_ERRORS}, operation_id="token_revoke")
def token_revoke(request, token_id: int = Path(..., ge=1, le=2**62)):
    """Revoke one of your tokens (a superuser may revoke anyone's)."""
    token = selectors.token_get(user=request.auth, token_id=token_id)
    services.token_revoke(token=token, actor=_actor(request))
    return Status(204, None)


# ===================================================================== health


@health_router.get("/kernels", response={200: FleetHealthOut, 503: FleetHealthOut}, operation_id="health_kernels")
def health_kernels(request):
    """For uptime monitors: 503 when any kernel is stale (not reporting), halted or has a
    faulted slot, 200 otherwise; the body lists each kernel's problems. No login: it says
    no more than names, states and problem codes (no halt reason, no actor)."""
    kernels = [{
        "name": row["name"], "state": row["state"], "condition": row["condition"], "stale": row["stale"],
        "halted": row["halt"] is not None, "heartbeat_age_s": row["heartbeat_age_s"],
        "faulted_slots": row["faulted_slots"], "problems": row["problems"],
    } for row in selectors.console_health()["kernels"]]
    ok = not any(k["stale"] or k["halted"] or k["faulted_slots"] for k in kernels)
    return Status(200 if ok else 503, {"ok": ok, "kernels": kernels})


def add_routers(api) -> None:
    api.add_router("/kernels", kernels_router)
    api.add_router("/kernels", slots_router)
    api.add_router("/commands", commands_router)
    api.add_router("/audit", audit_router)
    api.add_router("/tokens", tokens_router)
    api.add_router("/health", health_router)
    from .api_trading import add_trading_routers  # fills, positions, equity, slot.add; it imports nothing of this module
    add_trading_routers(api, slots_router=slots_router)
    from .api_reports import reports_router  # GET /kernels/{name}/report; imports nothing of this module
    api.add_router("/kernels", reports_router)

