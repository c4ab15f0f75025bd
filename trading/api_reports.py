"""The report API: GET /api/kernels/{name}/report, the figures of kernel/report.py over the
console's mirrored fills and equity samples (trading/report_reads.py). A read: view_kernel.
Independent of trading/api.py (which registers it), so that no import cycle forms."""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from ninja import Path, Query, Router

try:
    from ninja import Status
except ImportError:  # django-ninja < 1.5 takes a (status, body) tuple
    def Status(status_code, value):  # noqa: N802
        return status_code, value

from kernel.protocol import SLOT_ID_PATTERN
from kernel.report_format import as_dict

from . import selectors, services
from .auth import API_AUTH
from .report_reads import kernel_report
from .report_schemas import ReportOut
from .schemas import NAME_PATTERN, ErrorOut

reports_router = Router(auth=API_AUTH, tags=["reports"])


@reports_router.get("/{name}/report", response={200: ReportOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut,
                                                 422: ErrorOut}, operation_id="kernel_report")
def kernel_report_endpoint(request, name: str = Path(..., pattern=NAME_PATTERN, description="the kernel's name"),
                           slot: Optional[str] = Query(None, pattern=SLOT_ID_PATTERN, description="one slot only"),
                           since: Optional[datetime] = Query(None, description="from (ISO 8601)"),
                           until: Optional[datetime] = Query(None, description="to (ISO 8601)")):
    """The kernel's report: returns, drawdown, Sharpe/Sortino/Calmar, exposure, turnover, fees,
    trades (win/draw/loss, best, worst, durations), per slot, every trade, the equity curve."""
    user = request.auth
    # The report is the kernel's fills, priced: whoever may not read fills may not read it.
    if not user.has_perm("trading.view_fill"):
        raise services.NotAllowed(f"{user.get_username()} may not do this (needs the view_fill permission)")
    kernel = selectors.kernel_get(name)
    report = kernel_report(kernel=kernel, slot_id=slot, since=since, until=until)
    return Status(200, {**as_dict(report), "kernel": kernel.name})
