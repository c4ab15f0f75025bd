"""The trading API (issue 14, item 8): a kernel's fills, its slots' positions, its equity
series, and slot.add. Reads need the model's view permission (view_fill, view_slot,
view_equitysample: every role); slot.add needs configure_slot (Risk), as every slot
configuration does (services/permissions.py). Each endpoint is one read
(trading/trading_reads.py) or one service call (services.command_issue)."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from ninja import Path, Query, Router


from . import selectors, services
from .auth import API_AUTH
from .schemas import NAME_PATTERN, CommandAcceptedOut, ErrorOut
from .services.command_feedback import command_answer
from .trading_reads import equity_series, fills_page, slot_positions
from .trading_schemas import EquityFilters, EquitySeriesOut, FillFilters, FillPageOut, PositionOut, SlotAddIn

try:
    from ninja import Status
except ImportError:  # django-ninja < 1.5 takes a (status, body) tuple
    def Status(status_code, value):  # noqa: N802
        return status_code, value


MAX_WAIT_S = settings.FORESIGHT_API_MAX_WAIT_S
_READ_ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut}
_WRITE_ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut,
                 503: ErrorOut}
KernelName = Path(..., pattern=NAME_PATTERN, description="the kernel's name")
Wait = Query(0.0, ge=0, le=MAX_WAIT_S,
             description=f"seconds to wait for the kernel's answer (at most {MAX_WAIT_S:g}, FORESIGHT_API_MAX_WAIT_S)")

trading_router = Router(auth=API_AUTH, tags=["trading"])


def _require(request: HttpRequest, perm: str) -> None:
    user = request.auth
    if not user.has_perm(perm):
        raise services.NotAllowed(f"{user.get_username()} may not do this (needs the {perm.split('.', 1)[1]} permission)")


@trading_router.get("/{name}/fills", response={200: FillPageOut, **_READ_ERRORS}, operation_id="fill_list")
def fill_list(request, name: str = KernelName, filters: FillFilters = Query(...)):
    """The kernel's fills, newest first, as the console mirrored them (of one slot, since a time)."""
    _require(request, "trading.view_fill")
    return Status(200, fills_page(kernel=selectors.kernel_get(name), slot=filters.slot, since=filters.since,
                                  offset=filters.offset, limit=filters.limit))


@trading_router.get("/{name}/positions", response={200: list[PositionOut], **_READ_ERRORS},
                    operation_id="position_list")
def position_list(request, name: str = KernelName):
    """Each slot's position, entry price, realised and unrealised P&L, as the kernel last reported."""
    _require(request, "trading.view_slot")
    return Status(200, slot_positions(kernel=selectors.kernel_get(name)))


@trading_router.get("/{name}/equity", response={200: EquitySeriesOut, **_READ_ERRORS}, operation_id="equity_series")
def equity(request, name: str = KernelName, filters: EquityFilters = Query(...)):
    """The kernel's equity over time (a sample about every 10 s while the console syncs), oldest first."""
    _require(request, "trading.view_equitysample")
    return Status(200, equity_series(kernel=selectors.kernel_get(name), since=filters.since, until=filters.until,
                                     limit=filters.limit))


def slot_add(request, payload: SlotAddIn, name: str = KernelName, wait: float = Wait):
    """Add a slot (the protocol's slot.add): 409 if it exists. The kernel loads the strategy if
    no slot runs it yet, checks ``params`` against it, and answers applied or rejected with why."""
    kernel = selectors.kernel_get(name)
    args = payload.model_dump(exclude_none=True)
    slot_id = args.pop("id")
    command = services.command_issue(kernel=kernel, action="slot.add", actor=services.Actor.from_request(request, "api"),
                                     slot_id=slot_id, args=args)
    if wait > 0:
        command = services.command_wait(command=command, timeout_s=wait)
    return Status(202, command_answer(command=command))


def add_trading_routers(api, *, slots_router: Router) -> None:
    """The reads on a router of their own; slot.add on the slots' router, because it shares its
    path with the slot list (POST and GET of /kernels/{name}/slots), and Django routes a path
    to the first router that has it."""
    slots_router.post("/{name}/slots", response={202: CommandAcceptedOut, **_WRITE_ERRORS},
                      operation_id="slot_add")(slot_add)
    api.add_router("/kernels", trading_router)
