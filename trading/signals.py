"""Signal receivers, connected in TradingConfig.ready()."""
from __future__ import annotations

from .client_ip import client_ip
from .models import AuthFailure
from .services.auth_failures import auth_failure_count, auth_lockout_record


def count_login_failed(sender, credentials=None, request=None, **kwargs) -> None:
    """A failed login (the admin form) is counted per client address and window, one row
    however many attempts (services/auth_failures.py) — not an audit row per attempt, which
    anyone could grow without bound. The lockout that follows is audited (below)."""
    credentials = credentials or {}
    username = str(credentials.get("username") or credentials.get("email") or "")[:150]
    auth_failure_count(kind=AuthFailure.KIND_LOGIN, source=client_ip(request) if request is not None else None,
                       detail=username)


def audit_locked_out(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    """django-axes locked a (client, username) pair out: one audit event per source and window."""
    path = getattr(request, "path", "") if request is not None else ""
    auth_lockout_record(source=ip_address, username=str(username or "")[:150], path=path)
