"""The console's record of each kernel: names, lookup by state dir, saving a registration,
and the stale-heartbeat check. (Registering also syncs: kernels.kernel_register.)"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_slug
from django.utils import timezone
from django.utils.text import slugify

from kernel.control import STATUS_FILE

from ..models import Kernel
from .actors import Actor
from .audit import audit_key, audit_record
from .errors import Conflict, ServiceError
from .timestamps import iso

log = logging.getLogger("trading.services")


def resolved_dir(state_dir: str | Path) -> str:
    return str(Path(state_dir).expanduser().resolve())


def kernel_lookup(name: str, state_dir: str) -> Kernel | None:
    """The kernel at ``state_dir`` (when given), else the one called ``name``."""
    if state_dir:
        return Kernel.objects.filter(state_dir=resolved_dir(state_dir)).first()
    return Kernel.objects.filter(name=name).first() if name else None


def kernel_name_for_dir(state_dir: str | Path) -> str:
    """A kernel name from its state dir's folder name (``var/kernel`` → ``kernel``)."""
    return (slugify(Path(state_dir).name) or "kernel")[:64]


def status_path(kernel: Kernel) -> Path:
    return Path(kernel.state_dir) / STATUS_FILE


def kernel_save(*, name: str, state_dir: str, host: str = "", queue: str = "") -> Kernel:
    """Create (or update) the console's record of a kernel, audited; idempotent. Runs in the
    caller's transaction (kernel_register's, which then syncs the kernel)."""
    try:
        validate_slug(name)
    except DjangoValidationError:
        raise ServiceError(f"kernel name {name!r} must be letters, digits, - and _") from None
    if len(name) > 64:
        raise ServiceError("kernel name must be at most 64 characters")
    state_dir = resolved_dir(state_dir) if not host else str(state_dir)
    other = Kernel.objects.filter(state_dir=state_dir, host=host).exclude(name=name).first()
    if other is not None:
        raise Conflict(f"state dir {state_dir} is already registered as kernel {other.name!r}")
    kernel, created = Kernel.objects.get_or_create(
        name=name, defaults={"state_dir": state_dir, "host": host, "queue": queue}
    )
    if created:
        audit_record(action="kernel.registered", actor=Actor.system(), kernel=kernel,
                     payload={"state_dir": state_dir, "host": host, "queue": queue})
    elif (kernel.state_dir, kernel.host, kernel.queue) != (state_dir, host, queue):
        before = {"state_dir": kernel.state_dir, "host": kernel.host, "queue": kernel.queue}
        kernel.state_dir, kernel.host, kernel.queue = state_dir, host, queue
        kernel.save(update_fields=["state_dir", "host", "queue"])
        audit_record(action="kernel.updated", actor=Actor.system(), kernel=kernel,
                     payload={"before": before, "after": {"state_dir": state_dir, "host": host, "queue": queue}})
    return kernel


# kernel name → (the stale episode last logged: its last heartbeat, when: monotonic), to log an
# episode again only every FORESIGHT_STALE_LOG_EVERY_S.
_stale_logged: dict[str, tuple[str | None, float]] = {}


def kernel_stale_check(*, now: datetime | None = None, max_age_s: float | None = None) -> list[Kernel]:
    """Kernels whose last heartbeat is older than ``max_age_s`` (default: the setting
    FORESIGHT_STALE_AFTER_S) while their last status does not say "stopped" (a clean stop is
    its own event, kernel.stopped): each stale episode (the silence after one last heartbeat)
    is audited once, and logged at ERROR when it starts, then at most every
    FORESIGHT_STALE_LOG_EVERY_S (in this process). Its end is kernel.recovered."""
    now = now or timezone.now()
    if max_age_s is None:
        max_age_s = settings.FORESIGHT_STALE_AFTER_S
    cutoff = now - timedelta(seconds=max_age_s)
    stale = list(Kernel.objects.filter(heartbeat_at__lt=cutoff).exclude(state="stopped"))
    for kernel in stale:
        age = (now - kernel.heartbeat_at).total_seconds()
        episode, logged = _stale_logged.get(kernel.name, (None, 0.0))
        if (episode != iso(kernel.heartbeat_at)
                or time.monotonic() - logged >= getattr(settings, "FORESIGHT_STALE_LOG_EVERY_S", 300.0)):
            _stale_logged[kernel.name] = (iso(kernel.heartbeat_at), time.monotonic())
            log.error("kernel %s is stale (not reporting): last heartbeat %s (%.0f s ago), last state %s",
                      kernel.name, iso(kernel.heartbeat_at), age, kernel.state)
        audit_record(
            action="kernel.stale", actor=Actor.system(), kernel=kernel, outcome="stale",
            payload={"heartbeat_at": iso(kernel.heartbeat_at), "age_s": round(age, 1),
                     "state": kernel.state, "max_age_s": max_age_s},
            dedupe_key=audit_key("kernel.stale", kernel.name, iso(kernel.heartbeat_at)),
        )
    return stale
