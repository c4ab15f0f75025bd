"""Failed authentications, counted per (kind, source, window) — one row however many attempts.

A wrong admin password, a bad bearer token and a lockout each add one to the row of their
kind for the client's address and the current window (FORESIGHT_AUTH_WINDOW_S): a flood of
attempts updates a counter instead of appending rows. Rows older than
``AUTH_FAILURES_KEPT_DAYS`` are deleted when a new window's row is made, so the table holds
at most (kinds × sources × windows) of the last weeks.

The lockout itself is django-axes' (settings: AXES_*); a lockout is audited once per source
and window (the first lockout row of that window), not once per refused attempt. The bad
token count is also the API's brake on guessing: past FORESIGHT_BAD_TOKEN_LIMIT in a window,
every bearer token from that address is refused with 429 before it is even looked up
(trading/auth.py).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from ..models import AuthFailure
from .actors import Actor
from .audit import audit_record

log = logging.getLogger("trading.services")

AUTH_FAILURES_KEPT_DAYS = 30


def auth_window_start(now: datetime | None = None) -> datetime:
    """The start of the counting window ``now`` falls in (windows are aligned to the epoch)."""
    now = now or timezone.now()
    width = max(1, int(settings.FORESIGHT_AUTH_WINDOW_S))
    seconds = int(now.timestamp()) // width * width
    return datetime.fromtimestamp(seconds, tz=dt_timezone.utc)


def auth_failure_count(*, kind: str, source: str | None, detail: str = "", now: datetime | None = None) -> int:
    """Count one failure of ``kind`` from ``source`` in the current window; returns the
    window's count including this one. Never raises on a database error (a locked table must
    not turn a refused login into a server error): logs it and returns 0."""
    now = now or timezone.now()
    source = (source or "unknown")[:64]
    window = auth_window_start(now)
    detail = (detail or "")[:150]
    try:
        with transaction.atomic():
            updated = AuthFailure.objects.filter(kind=kind, source=source, window_start=window).update(
                count=F("count") + 1, last_at=now, last_detail=detail)
            if not updated:
                try:
                    with transaction.atomic():
                        AuthFailure.objects.create(kind=kind, source=source, window_start=window, count=1,
                                                   last_at=now, last_detail=detail)
                except IntegrityError:  # another process made the row first
                    AuthFailure.objects.filter(kind=kind, source=source, window_start=window).update(
                        count=F("count") + 1, last_at=now, last_detail=detail)
                else:
                    AuthFailure.objects.filter(
                        window_start__lt=window - timedelta(days=AUTH_FAILURES_KEPT_DAYS)).delete()
            row = AuthFailure.objects.filter(kind=kind, source=source, window_start=window).values_list(
                "count", flat=True).first()
    except DatabaseError as exc:
        log.error("could not count a failed %s from %s: %s", kind, source, exc)
        return 0
    return int(row or 0)


def auth_failures_in_window(*, kind: str, source: str | None, now: datetime | None = None) -> int:
    """How many failures of ``kind`` came from ``source`` in the current window."""
    try:
        count = AuthFailure.objects.filter(kind=kind, source=(source or "unknown")[:64],
                                           window_start=auth_window_start(now)).values_list("count", flat=True).first()
    except DatabaseError as exc:
        log.error("could not read the failed %s count of %s: %s", kind, source, exc)
        return 0
    return int(count or 0)


def auth_lockout_record(*, source: str | None, username: str, path: str = "") -> bool:
    """django-axes locked ``username`` out for ``source``: counted, and audited once per source
    and window (True when this call wrote the audit event)."""
    count = auth_failure_count(kind=AuthFailure.KIND_LOCKOUT, source=source, detail=username)
    if count != 1:
        return False
    actor = Actor(name=username or "(blank)", source="admin" if path.startswith("/admin") else "system", ip=source)
    payload = {"username": username, "path": path, "limit": settings.AXES_FAILURE_LIMIT,
               "lockout_s": int(settings.AXES_COOLOFF_TIME.total_seconds())}
    try:
        audit_record(action="login.locked_out", actor=actor, outcome="refused", payload=payload)
    except DatabaseError as exc:
        log.error("could not audit the lockout of %r from %s: %s", username, source, exc)
        return False
    return True
