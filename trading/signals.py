"""Signal receivers, connected in TradingConfig.ready()."""
from __future__ import annotations

import logging

from django.db import DatabaseError

from . import services

log = logging.getLogger("trading.signals")


def audit_login_failed(sender, credentials=None, request=None, **kwargs) -> None:
    """Every failed login (admin form, API) is an audit event: who was tried, from where."""
    credentials = credentials or {}
    username = str(credentials.get("username") or credentials.get("email") or "")[:150]
    ip = request.META.get("REMOTE_ADDR") if request is not None else None
    path = getattr(request, "path", "") if request is not None else ""
    source = "admin" if path.startswith("/admin") else ("api" if path.startswith("/api") else "system")
    actor = services.Actor(name=username or "(blank)", source=source, ip=ip)
    event = {"action": "login.failed", "actor": actor, "outcome": "failed",
             "payload": {"username": username, "path": path}}
    try:
        services.audit_record(**event)
    except DatabaseError as exc:  # the login page must not break because the audit table is locked
        log.error("could not audit a failed login for %r (%s): spooled", username, exc)
        services.audit_spool(**event)
