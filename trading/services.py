"""The console's service layer: the one place where state changes.

The admin, the API, kernelctl and the management commands translate a request into one
call here. Every function is keyword-only, typed and named ``<thing>_<verb>``; the ones
that write are atomic. The kernel is reached only through its control plane
(kernel.commands / kernel.control): commands and the halt are written into the kernel's
control.json, outcomes are read back from its status.json by :func:`status_sync`.

Two rules shape this module:

- **Halt never waits on the database.** :func:`halt_engage` writes control.json first and
  only then records the halt; if the database is down or locked, the audit event goes to
  a local spool file (one fsynced JSON line per event) that :func:`audit_spool_flush`
  writes to the database later, exactly once (each spooled event carries a dedupe key).
- **Each kernel outcome is audited exactly once.** Outcomes carry an
  ``AuditEvent.dedupe_key`` derived from what the kernel reported, so running
  :func:`status_sync` any number of times, in any number of processes, records each once.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import filelock
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_slug
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.text import slugify
from pydantic import ValidationError

from kernel import commands as kernel_commands
from kernel.control import (
    KEEP,
    STATUS_FILE,
    ControlError,
    StatusUnreadable,
    append_commands,
    new_command_id,
    read_status,
)
from kernel.errors import BadCommand, ReloadFailed
from kernel.protocol import ACTIONS, SLOT_ACTIONS, Command, CommandStatus, SlotConfig, SlotStatus, Status
from kernel.versions import StrategyLoader

from .models import (
    ApiToken,
    AuditEvent,
    ControlCommand,
    EquitySample,
    Fill,
    Kernel,
    Slot,
)

log = logging.getLogger("trading.services")

__all__ = [
    "Actor",
    "ServiceError",
    "NotAllowed",
    "NotFound",
    "Conflict",
    "Unavailable",
    "required_permission",
    "command_issue",
    "command_issue_offline",
    "command_dispatch",
    "command_deliver",
    "command_expire",
    "commands_expire_due",
    "command_wait",
    "halt_engage",
    "halt_deliver",
    "halt_release",
    "slot_configure",
    "status_sync",
    "host_sync",
    "kernel_is_local",
    "kernel_stale_check",
    "kernel_register",
    "kernel_for_state_dir",
    "kernel_name_for_dir",
    "audit_record",
    "audit_spool",
    "audit_spool_flush",
    "token_create",
    "token_revoke",
    "token_authenticate",
    "roles_setup",
]

COMMAND_TTL_S = 300.0  # a command not delivered within this is expired, never sent late
EQUITY_SAMPLE_EVERY_S = 10.0
REDELIVER_AFTER_S = 3.0  # a delivered command the kernel has not seen after this is re-sent
MAX_DELIVERY_ATTEMPTS = 5
TOKEN_TOUCH_EVERY_S = 60.0  # last_used_at is refreshed at most this often (a write per request is waste)
TOKEN_PREFIX = "fst"


# ===================================================================== actors and errors


@dataclass(frozen=True)
class Actor:
    """Who does something: a console user, the OS user of a shell, or the system."""

    name: str  # username, or "user@host" for the CLI, or "system"
    source: str  # "admin" | "api" | "cli" | "system" (and "kernel" for outcomes)
    user: Any = None  # a User; None for the CLI/system (trusted: shell access to the state dir)
    ip: str | None = None

    @classmethod
    def from_request(cls, request, source: str) -> "Actor":
        user = getattr(request, "auth", None)
        if user is None or not getattr(user, "is_authenticated", False):
            user = getattr(request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            user = None
        name = user.get_username() if user is not None else "anonymous"
        return cls(name=name, source=source, user=user, ip=_clean_ip(request.META.get("REMOTE_ADDR")))

    @classmethod
    def cli(cls) -> "Actor":
        return cls(name=kernel_commands.default_actor(), source="cli")

    @classmethod
    def system(cls) -> "Actor":
        return cls(name="system", source="system")

    @classmethod
    def for_kernel(cls, kernel_name: str) -> "Actor":
        return cls(name=f"kernel:{kernel_name}", source="kernel")


class ServiceError(Exception):
    """A request the console refuses; the message is for the operator."""

    status_code = 400

    def __init__(self, message: str, *, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}  # field -> message, for invalid input


class NotAllowed(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Unavailable(ServiceError):
    """The control plane could not be written (state dir missing, lock held): retry or use the CLI."""

    status_code = 503


def _clean_ip(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        return None


# ===================================================================== permissions

_OPERATE = "trading.operate_kernel"
_PERMISSIONS = {
    "start": _OPERATE,
    "stop": _OPERATE,
    "pause": _OPERATE,
    "resume": _OPERATE,
    "reload": _OPERATE,
    "slot.pause": _OPERATE,
    "slot.resume": _OPERATE,
    "slot.flatten": _OPERATE,
    "halt": "trading.engage_halt",
    "release": "trading.release_halt",
    "rollback": "trading.rollback_strategy",
    "slot.configure": "trading.configure_slot",
    "slot.add": "trading.configure_slot",
}


def required_permission(action: str) -> str:
    """The permission (``app_label.codename``) an action needs, the same in the admin, API and CLI."""
    try:
        return _PERMISSIONS[action]
    except KeyError:
        raise ServiceError(f"unknown action {action!r}; known: halt, {', '.join(ACTIONS)}") from None


def _check_permission(actor: Actor, action: str) -> None:
    perm = required_permission(action)
    if actor.user is not None:
        if not actor.user.has_perm(perm):
            raise NotAllowed(f"{actor.name} may not {action} (needs the {perm.split('.', 1)[1]} permission)")
        return
    if actor.source not in ("cli", "system"):
        raise NotAllowed(f"{action} needs a logged-in user with the {perm.split('.', 1)[1]} permission")


# ===================================================================== audit log


def _key(*parts: Any) -> str:
    """A dedupe key: readable when it fits the column, hashed when it does not."""
    key = ":".join(str(p) for p in parts)
    if len(key) <= 200:
        return key
    return f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def audit_record(
    *,
    action: str,
    actor: Actor | None,
    kernel: Kernel | None = None,
    kernel_name: str = "",
    slot_id: str = "",
    command_id: str = "",
    outcome: str = "",
    payload: dict | None = None,
    dedupe_key: str | None = None,
    at: datetime | None = None,
) -> AuditEvent | None:
    """Append one audit event: the ONE place AuditEvents are created.

    With a ``dedupe_key`` the event is recorded at most once, however often (and in however
    many processes) this is called: a duplicate returns None."""
    actor = actor or Actor.system()
    if dedupe_key and AuditEvent.objects.filter(dedupe_key=dedupe_key).exists():
        return None
    event = AuditEvent(
        at=at or timezone.now(),
        actor=actor.name[:200],
        user_id=getattr(actor.user, "pk", None),
        source=actor.source[:8],
        ip=_clean_ip(actor.ip),
        action=action[:64],
        kernel_name=(kernel.name if kernel is not None else kernel_name or "")[:64],
        slot_id=(slot_id or "")[:64],
        command_id=(command_id or "")[:128],
        outcome=(outcome or "")[:32],
        payload=_jsonable(payload or {}),
        dedupe_key=dedupe_key,
    )
    if not dedupe_key:
        event.save(force_insert=True)
        return event
    try:
        with transaction.atomic():
            event.save(force_insert=True)
    except IntegrityError:
        if AuditEvent.objects.filter(dedupe_key=dedupe_key).exists():
            return None  # another process recorded it first
        raise
    return event


# --------------------------------------------------------------------- the spool


def audit_spool_path() -> Path:
    configured = getattr(settings, "FORESIGHT_AUDIT_SPOOL", None)
    return Path(configured) if configured else Path(settings.BASE_DIR) / "var" / "audit-spool.jsonl"


def _spool_lock(path: Path, timeout: float) -> filelock.BaseFileLock:
    return filelock.FileLock(str(path) + ".lock", timeout=timeout)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _spool_append(event: dict[str, Any]) -> Path:
    """Append one event to the spool as a JSON line, fsynced. Never loses the event to a lock:
    if the spool lock is stuck, it appends without it (O_APPEND keeps a line whole)."""
    path = audit_spool_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(event, default=str, ensure_ascii=False) + "\n").encode("utf-8")

    def write() -> None:
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path.parent)

    try:
        with _spool_lock(path, timeout=5.0):
            write()
    except filelock.Timeout:
        log.warning("audit spool lock %s.lock is stuck; appending without it", path)
        write()
    return path


def _spool_event(
    *,
    action: str,
    actor: Actor,
    kernel_name: str,
    state_dir: str = "",
    slot_id: str = "",
    command_id: str = "",
    outcome: str = "",
    payload: dict | None = None,
    dedupe_key: str | None = None,
    command: dict | None = None,
) -> Path:
    event = {
        "action": action,
        "actor": actor.name,
        "user_id": getattr(actor.user, "pk", None),
        "source": actor.source,
        "ip": _clean_ip(actor.ip),
        "kernel_name": kernel_name,
        "state_dir": state_dir,
        "slot_id": slot_id,
        "command_id": command_id,
        "outcome": outcome,
        "payload": payload or {},
        "dedupe_key": dedupe_key or _key("spool", secrets.token_hex(16)),
        "at": timezone.now().isoformat(),
    }
    if command is not None:
        event["command"] = command
    path = _spool_append(event)
    log.error("database unavailable: audit event %s spooled to %s", action, path)
    return path


def audit_spool(
    *,
    action: str,
    actor: Actor,
    kernel_name: str = "",
    slot_id: str = "",
    command_id: str = "",
    outcome: str = "",
    payload: dict | None = None,
    dedupe_key: str | None = None,
) -> Path:
    """For a caller whose audit_record failed on the database: keep the event in the spool
    (audit_spool_flush writes it later, once)."""
    return _spool_event(action=action, actor=actor, kernel_name=kernel_name, slot_id=slot_id,
                        command_id=command_id, outcome=outcome, payload=payload, dedupe_key=dedupe_key)


def _spool_write(event: dict[str, Any]) -> bool:
    """Write one spooled event (and the command row it describes) to the database."""
    if event.get("state_dir"):
        kernel = kernel_for_state_dir(state_dir=event["state_dir"])
    else:
        kernel = _kernel_for(event.get("kernel_name") or "", "")
    kernel_name = kernel.name if kernel is not None else event.get("kernel_name") or ""
    at = _parse_dt(event.get("at")) or timezone.now()
    command = event.get("command")
    if command and kernel is not None and command.get("command_id"):
        ControlCommand.objects.get_or_create(
            command_id=command["command_id"],
            defaults={
                "kernel": kernel,
                "action": command.get("action", ""),
                "slot_id": command.get("slot_id") or "",
                "args": command.get("args") or {},
                "user_id": event.get("user_id"),
                "actor": event.get("actor", "")[:200],
                "source": (event.get("source") or "cli")[:8],
                "ip": _clean_ip(event.get("ip")),
                "issued_at": at,
                "status": ControlCommand.Status.DELIVERED,
                "delivered_at": at,
                "delivery_attempts": 1,
            },
        )
    user = None
    if event.get("user_id") is not None:
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(pk=event["user_id"]).first()
    actor = Actor(name=event.get("actor") or "system", source=event.get("source") or "system",
                  user=user, ip=event.get("ip"))
    payload = dict(event.get("payload") or {})
    payload["spooled"] = True
    recorded = audit_record(
        action=event.get("action") or "unknown",
        actor=actor,
        kernel_name=kernel_name,
        slot_id=event.get("slot_id") or "",
        command_id=event.get("command_id") or "",
        outcome=event.get("outcome") or "",
        payload=payload,
        dedupe_key=event.get("dedupe_key") or None,
        at=at,
    )
    return recorded is not None


def audit_spool_flush() -> int:
    """Write spooled audit events to the database; returns how many were recorded.

    The spool is renamed aside under its lock before it is read, so appends never race the
    flush; a batch is deleted only once every event in it is in the database. An event
    already there (same dedupe key) is skipped, so a flush interrupted half-way is simply
    run again. Never raises for a database that is still down: the batch waits."""
    path = audit_spool_path()
    if not path.parent.is_dir():
        return 0
    try:
        if path.exists() and path.stat().st_size > 0:
            with _spool_lock(path, timeout=5.0):
                if path.exists() and path.stat().st_size > 0:
                    stamp = datetime.now(dt_timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
                    os.replace(path, path.with_name(f"{path.name}.flushing-{stamp}-{os.getpid()}"))
                    _fsync_dir(path.parent)
    except filelock.Timeout:
        log.warning("audit spool lock %s.lock is busy; flushing what is already set aside", path)
    batches = sorted(path.parent.glob(f"{path.name}.flushing-*"))
    recorded = 0
    for batch in batches:
        try:
            lines = batch.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            continue  # another flusher finished it
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError("not an object")
            except ValueError:
                log.error("audit spool %s: unreadable line kept in %s.rejected: %r", batch, path, line[:200])
                with open(f"{path}.rejected", "a", encoding="utf-8") as f:
                    f.write(line + "\n")
                continue
            try:
                with transaction.atomic():
                    recorded += _spool_write(event)
            except DatabaseError as exc:
                log.warning("audit spool flush stopped, the database is still unavailable: %s", exc)
                return recorded
        try:
            batch.unlink()
        except FileNotFoundError:
            pass
    if recorded:
        log.info("audit spool: %d events written to the database", recorded)
    return recorded


# ===================================================================== kernels


def _parse_dt(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    if timezone.is_naive(dt):
        dt = dt.replace(tzinfo=dt_timezone.utc)
    return dt


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(dt_timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _resolved_dir(state_dir: str | Path) -> str:
    return str(Path(state_dir).expanduser().resolve())


def _kernel_for(name: str, state_dir: str) -> Kernel | None:
    """The kernel at ``state_dir`` (when given), else the one called ``name``."""
    if state_dir:
        return Kernel.objects.filter(state_dir=_resolved_dir(state_dir)).first()
    return Kernel.objects.filter(name=name).first() if name else None


def kernel_name_for_dir(state_dir: str | Path) -> str:
    """A kernel name from its state dir's folder name (``var/kernel`` → ``kernel``)."""
    return (slugify(Path(state_dir).name) or "kernel")[:64]


def kernel_for_state_dir(*, state_dir: str | Path) -> Kernel:
    """The kernel registered at ``state_dir``, registering it (named after the folder, or the
    folder plus a short hash when that name is taken) if the console does not know it yet."""
    resolved = _resolved_dir(state_dir)
    kernel = Kernel.objects.filter(state_dir=resolved).first()
    if kernel is not None:
        return kernel
    name = kernel_name_for_dir(resolved)
    if Kernel.objects.filter(name=name).exists():
        name = f"{name[:55]}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"
    return kernel_register(name=name, state_dir=resolved)


def _status_path(kernel: Kernel) -> Path:
    return Path(kernel.state_dir) / STATUS_FILE


@transaction.atomic
def kernel_register(*, name: str, state_dir: str, host: str = "", queue: str = "") -> Kernel:
    """Create (or update) the console's record of a kernel; idempotent. Syncs its status
    when its status.json is readable from here."""
    try:
        validate_slug(name)
    except DjangoValidationError:
        raise ServiceError(f"kernel name {name!r} must be letters, digits, - and _") from None
    if len(name) > 64:
        raise ServiceError("kernel name must be at most 64 characters")
    state_dir = _resolved_dir(state_dir) if not host else str(state_dir)
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
    if _status_path(kernel).is_file():
        status_sync(kernel=kernel)
        kernel.refresh_from_db()
    return kernel


def kernel_stale_check(*, now: datetime | None = None, max_age_s: float = 10.0) -> list[Kernel]:
    """Kernels whose last heartbeat is older than ``max_age_s``: each stale episode (the
    silence after one last heartbeat) is audited once, and logged at ERROR every time."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=max_age_s)
    stale = list(Kernel.objects.filter(heartbeat_at__lt=cutoff))
    for kernel in stale:
        age = (now - kernel.heartbeat_at).total_seconds()
        log.error("kernel %s is stale: last heartbeat %s (%.0f s ago), last state %s",
                  kernel.name, _iso(kernel.heartbeat_at), age, kernel.state)
        audit_record(
            action="kernel.stale", actor=Actor.system(), kernel=kernel, outcome="stale",
            payload={"heartbeat_at": _iso(kernel.heartbeat_at), "age_s": round(age, 1),
                     "state": kernel.state, "max_age_s": max_age_s},
            dedupe_key=_key("kernel.stale", kernel.name, _iso(kernel.heartbeat_at)),
        )
    return stale


# ===================================================================== commands


def _command_ttl() -> float:
    return float(getattr(settings, "FORESIGHT_COMMAND_TTL_S", COMMAND_TTL_S))


def _wire_command(command: ControlCommand) -> Command:
    return Command(
        id=command.command_id,
        action=command.action,
        slot=command.slot_id or None,
        args=dict(command.args or {}),
        issued_by=command.actor or None,
        issued_at=_iso(command.issued_at),
    )


# --------------------------------------------------------------------- routing: which process writes
#
# A kernel with no queue is delivered to and synced by the console's processes (it runs on
# this machine). A kernel with a queue belongs to its host's Celery worker: deliveries go to
# Kernel.queue, halts to "<Kernel.queue>.halt", and that worker's periodic sync (host_sync)
# reads its files. Without a broker (REDIS_URL empty) every task runs here, eagerly.


@lru_cache(maxsize=1)
def _this_host() -> str:
    return socket.gethostname()  # as `hostname` prints it; no DNS lookup in the halt's path


def _on_this_host(kernel: Kernel) -> bool:
    return not kernel.host or kernel.host == _this_host()


def _tasks_run_here() -> bool:
    return bool(getattr(settings, "CELERY_TASK_ALWAYS_EAGER", True))


def kernel_is_local(kernel: Kernel) -> bool:
    """Does this process deliver to and sync the kernel itself? Yes for a kernel on this
    machine with no queue, or for any kernel on this machine when there is no broker; a
    kernel behind a queue is its host worker's (host_sync passes on_host=True there)."""
    return _on_this_host(kernel) and (not kernel.queue or _tasks_run_here())


def _halt_reachable(kernel: Kernel) -> bool:
    """Can this process write the kernel's control.json itself (the halt's direct path)?"""
    return _on_this_host(kernel) and Path(kernel.state_dir).is_dir()


def halt_queue(kernel: Kernel) -> str:
    """The halt's own queue on the kernel's host: never behind a backlog of deliveries."""
    return f"{kernel.queue}.halt"


def _enqueue(task, *, args: tuple, queue: str, what: str) -> str | None:
    """Publish a task; None when sent, else why not. Runs after a commit (or before the
    database for a halt), so it must never raise into the request: a row left pending is
    delivered once the broker is back (the host's sync re-delivers pending commands)."""
    try:
        task.apply_async(args=args, queue=queue)
    except Exception as exc:  # noqa: BLE001 - kombu/redis raise many types; the row keeps the truth
        if _tasks_run_here():  # no broker: the task itself ran here, and failed
            log.exception("%s: the task failed in this process", what)
            return f"the task failed in this process ({type(exc).__name__}: {exc})"
        error = f"not queued on {queue}: the broker is unavailable ({type(exc).__name__}: {exc})"
        log.error("%s %s", what, error)
        return error
    return None


def command_dispatch(*, command: ControlCommand) -> ControlCommand:
    """Send an issued command on its way, once the transaction that recorded it committed:
    delivered in this process for a kernel with no queue, else a delivery task on the kernel's
    queue (run by its host's worker; eagerly here without a broker). Never raises: a command
    that could not be sent stays pending, with the reason in ``error``."""
    kernel = command.kernel
    if not kernel.queue:
        return command_deliver(command=command)
    from . import tasks  # tasks import this module

    error = _enqueue(tasks.deliver_command, args=(command.pk,), queue=kernel.queue,
                     what=f"command {command.command_id} for kernel {kernel.name}")
    try:
        if error:
            ControlCommand.objects.filter(pk=command.pk, status=ControlCommand.Status.PENDING).update(error=error)
            command.error = error
        elif _tasks_run_here():
            command.refresh_from_db()
    except DatabaseError as exc:
        log.error("command %s: could not record its dispatch: %s", command.command_id, exc)
    return command


def _check_releasable(kernel: Kernel) -> None:
    if kernel.halt_engaged:
        return
    if kernel.halt_requested_at is not None:
        raise Conflict(
            f"kernel {kernel.name}: a halt was written at {_iso(kernel.halt_requested_at)} and the kernel "
            "has not confirmed it yet; wait until it reports halted, then release"
        )
    raise Conflict(f"kernel {kernel.name} is not halted (its last status says {kernel.state})")


@transaction.atomic
def command_issue(
    *,
    kernel: Kernel,
    action: str,
    actor: Actor,
    slot_id: str | None = None,
    args: dict | None = None,
) -> ControlCommand:
    """Issue a command: check permission and shape, record it (row + "command.issued"), and
    deliver it into control.json once the transaction commits."""
    if action == "halt":
        raise ServiceError("a halt is not a command: use halt_engage")
    _check_permission(actor, action)
    # Issuers of one kernel take turns (PostgreSQL; SQLite serialises writers anyway), so that
    # its commands' ids grow in commit order: delivery sends them in id order (command_deliver).
    list(Kernel.objects.select_for_update().filter(pk=kernel.pk).values_list("pk", flat=True))
    if action in SLOT_ACTIONS:
        if not slot_id:
            raise ServiceError(f"{action} needs a slot")
        exists = Slot.objects.filter(kernel=kernel, slot_id=slot_id).exists()
        if action == "slot.add":
            if exists:
                raise Conflict(f"slot {slot_id!r} already exists on {kernel.name}; use slot.configure")
            try:
                SlotConfig.model_validate({**(args or {}), "id": slot_id})
            except ValidationError as exc:
                raise _invalid_config(exc) from None
        elif not exists:
            raise NotFound(f"kernel {kernel.name} has no slot {slot_id!r}")
    elif slot_id:
        raise ServiceError(f"{action} is a kernel action and takes no slot")
    if action == "release":
        _check_releasable(kernel)
    if action in ("resume", "slot.resume") and (kernel.halt_engaged or kernel.halt_requested_at):
        raise Conflict(f"kernel {kernel.name} is halted: release the halt first, then {action}")
    try:
        wire = kernel_commands.build_command(action, slot_id or None, args or {}, issued_by=actor.name)
    except BadCommand as exc:
        raise ServiceError(str(exc)) from None
    now = timezone.now()
    command = ControlCommand.objects.create(
        command_id=wire.id,
        kernel=kernel,
        action=action,
        slot_id=slot_id or "",
        args=_jsonable(wire.args),
        user=actor.user,
        actor=actor.name[:200],
        source=actor.source if actor.source in ControlCommand.Source.values else ControlCommand.Source.SYSTEM,
        ip=_clean_ip(actor.ip),
        issued_at=now,
        expires_at=now + timedelta(seconds=_command_ttl()),
    )
    audit_record(
        action="command.issued", actor=actor, kernel=kernel, slot_id=slot_id or "",
        command_id=command.command_id, outcome="issued",
        payload={"action": action, "args": command.args},
    )
    transaction.on_commit(lambda: command_dispatch(command=command))
    return command


def command_expire(*, command: ControlCommand, now: datetime | None = None) -> bool:
    """pending → expired, audited once ("command.expired"): a command not delivered within its
    time to live is never sent late, and never dropped silently. False if it was no longer
    pending (delivered meanwhile, or expired by another process)."""
    now = now or timezone.now()
    error = command.error or "not delivered before it expired"
    with transaction.atomic():
        n = ControlCommand.objects.filter(pk=command.pk, status=ControlCommand.Status.PENDING).update(
            status=ControlCommand.Status.EXPIRED, resolved_at=now, error=error)
        if n:
            audit_record(
                action="command.expired", actor=Actor.system(), kernel=command.kernel, slot_id=command.slot_id,
                command_id=command.command_id, outcome="expired",
                payload={"action": command.action, "issued_at": _iso(command.issued_at),
                         "expires_at": _iso(command.expires_at), "last_error": command.error},
                dedupe_key=_key("command.expired", command.command_id),
            )
    if n:
        command.status, command.resolved_at, command.error = ControlCommand.Status.EXPIRED, now, error
        log.warning("command %s (%s) for kernel %s expired undelivered: %s", command.command_id,
                    command.action, command.kernel.name, error)
    return bool(n)


def commands_expire_due(*, kernel: Kernel | None = None, now: datetime | None = None) -> int:
    """Expire every pending command past its ``expires_at`` (of one kernel, or all): the
    console's own check, for kernels whose host does not answer. Halts never expire."""
    now = now or timezone.now()
    due = ControlCommand.objects.filter(status=ControlCommand.Status.PENDING, expires_at__lte=now)
    if kernel is not None:
        due = due.filter(kernel=kernel)
    return sum(command_expire(command=c, now=now) for c in due.select_related("kernel").order_by("pk")[:1000])


def _command_fail(command: ControlCommand, error: str, now: datetime) -> None:
    with transaction.atomic():
        n = ControlCommand.objects.filter(pk=command.pk, status=ControlCommand.Status.PENDING).update(
            status=ControlCommand.Status.FAILED, resolved_at=now, error=error)
        if n:
            audit_record(
                action="command.delivery_failed", actor=Actor.system(), kernel=command.kernel,
                slot_id=command.slot_id, command_id=command.command_id, outcome="failed",
                payload={"action": command.action, "error": error},
                dedupe_key=_key("command.delivery_failed", command.command_id),
            )
    if n:
        command.status, command.resolved_at, command.error = ControlCommand.Status.FAILED, now, error


def _release_too_late(command: ControlCommand, now: datetime) -> str | None:
    """A release writes halt false: sent late, it could cancel a halt written since. Why not to send it."""
    if command.issued_at <= now - timedelta(seconds=REDELIVER_AFTER_S):
        return "not delivered in time; a release is never sent late: issue it again"
    if ControlCommand.objects.filter(kernel_id=command.kernel_id, action="halt",
                                     issued_at__gt=command.issued_at).exists():
        return "a halt was requested after this release was issued: release again once the kernel reports halted"
    return None


def _delivery_batch(command: ControlCommand, now: datetime) -> list[ControlCommand]:
    """The command and every older one of its kernel still pending, in id order. A delivery
    always sends such a prefix, so control.json holds a kernel's commands in issue order
    however deliveries race (ids grow in commit order: command_issue). Expired commands are
    expired on the way, releases that would arrive late are failed."""
    rows = (ControlCommand.objects.filter(kernel_id=command.kernel_id, status=ControlCommand.Status.PENDING,
                                          pk__lte=command.pk)
            .exclude(action="halt").order_by("pk"))
    batch = []
    for row in rows:
        if row.pk == command.pk:
            row = command
        row.kernel = command.kernel
        if row.expires_at is not None and row.expires_at <= now:
            command_expire(command=row, now=now)
            continue
        if row.action == "release":
            why = _release_too_late(row, now)
            if why:
                _command_fail(row, why, now)
                continue
        batch.append(row)
    return batch


def _ledger_results(kernel: Kernel, ids: Iterable[str]) -> dict[str, CommandStatus]:
    """Results status.json no longer lists, from the kernel's own read-only reader."""
    return kernel_commands.stored_results(Path(kernel.state_dir), list(ids))


def _kernel_done(kernel: Kernel, ids: list[str]) -> tuple[set[str], set[str]]:
    """(ids of ``ids`` the kernel already handled, every id status.json reports done — writers
    prune those from control.json)."""
    try:
        st = read_status(_status_path(kernel))
    except StatusUnreadable:
        st = None
    reported = {c.id for c in st.commands} if st is not None else set()
    done = set(ids) & reported
    rest = [i for i in ids if i not in done]
    if rest:
        done |= set(_ledger_results(kernel, rest))
    return done, reported


def command_deliver(*, command: ControlCommand,
                    after_write: Callable[[], None] | None = None) -> ControlCommand:
    """Append the command, with every older command of its kernel still pending, to the
    kernel's control.json, in one write, in issue order. Runs where the kernel's files are:
    in the console for a kernel with no queue, in its host's worker otherwise.

    Idempotent, because brokers redeliver: only a pending row is sent, an id the kernel already
    handled (status.json or its ledger) is not written again, and the kernel applies each id
    once. pending → delivered. A command past its time to live is expired instead (audited).
    On failure the commands stay pending with the error noted (re-delivered until they expire)
    and "command.delivery_failed" is audited once each. A release is never sent late (it
    writes halt false, which could cancel a newer halt): it fails instead.

    Never raises for the database after the write: a row left pending is re-sent, harmlessly.
    ``after_write`` runs between the write and the record (the tests' crash window)."""
    if command.status != ControlCommand.Status.PENDING:
        return command
    kernel = command.kernel
    now = timezone.now()
    if command.expires_at is not None and command.expires_at <= now:
        command_expire(command=command, now=now)
        return command
    try:
        batch = _delivery_batch(command, now)
    except DatabaseError as exc:
        log.warning("command %s: the database is unavailable (%s): sending it alone", command.command_id, exc)
        batch = [command]
    if command.status == ControlCommand.Status.PENDING and not any(c is command for c in batch):
        try:  # another process delivered it meanwhile
            command.refresh_from_db()
        except DatabaseError:
            pass
    if not batch:
        return command
    ids = [c.command_id for c in batch]
    done, reported = _kernel_done(kernel, ids)
    to_send = [c for c in batch if c.command_id not in done]
    try:
        if to_send:
            release = any(c.action == "release" for c in to_send)
            append_commands(Path(kernel.state_dir), [_wire_command(c) for c in to_send],
                            halt=False if release else KEEP, prune_ids=reported)
    except (ControlError, OSError, ValueError) as exc:
        _record_delivery_failure(batch, f"delivery to {kernel.state_dir} failed: {exc}", now)
        return command
    if after_write is not None:
        after_write()
    for c in batch:
        c.status, c.delivered_at, c.error = ControlCommand.Status.DELIVERED, now, ""
        c.delivery_attempts += 1
    try:
        with transaction.atomic():
            ControlCommand.objects.filter(pk__in=[c.pk for c in batch], status=ControlCommand.Status.PENDING).update(
                status=ControlCommand.Status.DELIVERED, delivered_at=now, error="",
                delivery_attempts=F("delivery_attempts") + 1,
            )
    except DatabaseError as exc:
        # In control.json; the rows say pending, so they are sent again later (harmless: same ids).
        log.error("commands %s delivered, but the database did not record it: %s", ", ".join(ids), exc)
    log.info("kernel %s: delivered %d command(s) up to %s%s", kernel.name, len(batch), command.command_id,
             f" ({len(batch) - len(to_send)} already handled by the kernel)" if len(to_send) < len(batch) else "")
    return command


def _record_delivery_failure(batch: list[ControlCommand], error: str, now: datetime) -> None:
    for c in batch:
        log.warning("command %s: %s", c.command_id, error)
        final = c.action == "release"
        c.status = ControlCommand.Status.FAILED if final else ControlCommand.Status.PENDING
        c.error = error
        c.delivery_attempts += 1
        if final:
            c.resolved_at = now
        try:
            with transaction.atomic():
                ControlCommand.objects.filter(pk=c.pk, status=ControlCommand.Status.PENDING).update(
                    status=c.status, error=error, delivery_attempts=F("delivery_attempts") + 1,
                    resolved_at=c.resolved_at,
                )
                audit_record(
                    action="command.delivery_failed", actor=Actor.system(), kernel=c.kernel,
                    slot_id=c.slot_id, command_id=c.command_id, outcome="failed" if final else "will_retry",
                    payload={"action": c.action, "error": error},
                    dedupe_key=_key("command.delivery_failed", c.command_id),
                )
        except DatabaseError as db_exc:
            log.error("command %s: could not record the failed delivery: %s", c.command_id, db_exc)


def _redeliver(command: ControlCommand) -> ControlCommand:
    """Re-send a delivered command the kernel never saw (e.g. a hand edit replaced control.json)."""
    kernel = command.kernel
    try:
        kernel_commands.send(Path(kernel.state_dir), _wire_command(command))
    except (ControlError, OSError, ValueError) as exc:
        log.warning("command %s: re-delivery failed: %s", command.command_id, exc)
        return command
    ControlCommand.objects.filter(pk=command.pk, status=ControlCommand.Status.DELIVERED).update(
        delivered_at=timezone.now(), delivery_attempts=command.delivery_attempts + 1,
    )
    log.warning("command %s re-delivered to %s: the kernel had not seen it", command.command_id, kernel.name)
    return command


def command_wait(*, command: ControlCommand, timeout_s: float) -> ControlCommand:
    """Sync the kernel's status until the command is final or ``timeout_s`` passed; the row, refreshed."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    kernel = command.kernel
    while True:
        status_sync(kernel=kernel)
        command.refresh_from_db()
        if command.is_final or time.monotonic() >= deadline:
            return command
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def command_issue_offline(
    *,
    state_dir: str | Path,
    kernel_name: str,
    action: str,
    actor: Actor,
    slot_id: str | None = None,
    args: dict | None = None,
) -> Command:
    """For the CLI when the database is unavailable: write the command straight into
    control.json and spool its audit event (the row and the event appear once the database
    is back and audit_spool_flush runs). Trusted callers only: no permission check."""
    if actor.user is not None or actor.source not in ("cli", "system"):
        raise NotAllowed("only the CLI may issue commands without the database")
    try:
        wire = kernel_commands.build_command(action, slot_id or None, args or {}, issued_by=actor.name)
        kernel_commands.send(Path(state_dir), wire)
    except BadCommand as exc:
        raise ServiceError(str(exc)) from None
    except (ControlError, OSError) as exc:
        raise Unavailable(f"could not write control.json in {state_dir}: {exc}") from None
    _spool_event(
        action="command.issued", actor=actor, kernel_name=kernel_name, state_dir=_resolved_dir(state_dir),
        slot_id=slot_id or "", command_id=wire.id, outcome="issued",
        payload={"action": action, "args": wire.args, "database": "unavailable"},
        dedupe_key=_key("command.issued", wire.id),
        command={"command_id": wire.id, "action": action, "slot_id": slot_id or "", "args": wire.args},
    )
    return wire


# ===================================================================== halt


def halt_engage(*, kernel: Kernel, actor: Actor, reason: str) -> ControlCommand | None:
    """Halt the kernel. The halt goes out FIRST (never waits on the database), then the record.

    - The kernel's state dir is reachable from this process (a kernel on this machine):
      control.json is written directly, so the halt needs no broker either. For a kernel
      behind a queue, a task on "<queue>.halt" then only confirms it (its host's worker
      syncs the kernel's answer at once).
    - It is not (a kernel on another host): the halt is published on "<queue>.halt", the
      priority path that host's worker consumes beside its deliveries, and the row stays
      pending; Kernel.halt_requested_at (the admin's "HALT REQUESTED" banner) says the halt
      is in flight and unconfirmed until the kernel reports halted. If the broker is down
      too, the row's error says so and the host's sync writes the halt once the broker is
      back; meanwhile halt it on its host with kernelctl (logged at CRITICAL).

    The record: a "halt" command row and "halt.engaged". If the database fails, the event is
    spooled and None is returned; the halt itself is already out.

    ``kernel`` may be an unsaved Kernel(name=..., state_dir=...) when the caller could not
    read the database (kernelctl at 2am)."""
    _check_permission(actor, "halt")
    reason = (reason or "").strip()[:500] or f"halted by {actor.name}"
    command_id = new_command_id("halt")
    direct = not kernel.queue or _halt_reachable(kernel)
    queue_error: str | None = None
    if direct:
        try:
            kernel_commands.halt(Path(kernel.state_dir), reason, actor.name)
        except (ControlError, OSError, ValueError) as exc:
            raise Unavailable(f"could not write the halt into {kernel.state_dir}: {exc}") from None
        log.critical("HALT written into %s/control.json by %s: %s", kernel.state_dir, actor.name, reason)
    else:
        from . import tasks  # tasks import this module

        queue_error = _enqueue(tasks.deliver_halt, args=(command_id, kernel.state_dir, reason, actor.name),
                               queue=halt_queue(kernel), what=f"HALT {command_id} for kernel {kernel.name}")
        if queue_error:
            log.critical("HALT for kernel %s on %s NOT SENT (%s): halt it on its host: "
                         "python manage.py kernelctl --state-dir %s halt", kernel.name, kernel.host or "its host",
                         queue_error, kernel.state_dir)
        else:
            log.critical("HALT for kernel %s on %s queued on %s by %s: in flight until the kernel confirms it",
                         kernel.name, kernel.host or "its host", halt_queue(kernel), actor.name)
    now = timezone.now()
    outcome = "written" if direct else ("not_queued" if queue_error else "queued")
    payload = {"reason": reason, "state_dir": kernel.state_dir,
               "path": "control.json" if direct else halt_queue(kernel)}
    if queue_error:
        payload["error"] = queue_error
    try:
        with transaction.atomic():
            row = kernel if kernel.pk else kernel_for_state_dir(state_dir=kernel.state_dir)
            command = ControlCommand.objects.create(
                command_id=command_id, kernel=row, action="halt", args={"reason": reason},
                user=actor.user, actor=actor.name[:200],
                source=actor.source if actor.source in ControlCommand.Source.values else ControlCommand.Source.SYSTEM,
                ip=_clean_ip(actor.ip), issued_at=now,
                status=ControlCommand.Status.DELIVERED if direct else ControlCommand.Status.PENDING,
                delivered_at=now if direct else None, delivery_attempts=1 if direct else 0,
                error=queue_error or "",
            )
            Kernel.objects.filter(pk=row.pk, halt_engaged=False).update(halt_requested_at=now)
            audit_record(
                action="halt.engaged", actor=actor, kernel=row, command_id=command_id, outcome=outcome,
                payload=payload, dedupe_key=_key("halt.engaged", command_id),
            )
            if direct and row.queue and not _tasks_run_here():  # eagerly it would only wait here
                transaction.on_commit(lambda: _halt_confirm(row, command_id, reason, actor.name))
        if kernel.pk:
            kernel.refresh_from_db(fields=["halt_requested_at"])
        return command
    except DatabaseError as exc:
        log.error("halt for %s is %s, but the database is unavailable (%s): spooling the audit event",
                  kernel.name, "written" if direct else outcome, exc)
        _spool_event(
            action="halt.engaged", actor=actor, kernel_name=kernel.name,
            state_dir=kernel.state_dir if direct else "",
            command_id=command_id, outcome=outcome, payload={**payload, "database": "unavailable"},
            dedupe_key=_key("halt.engaged", command_id),
            command={"command_id": command_id, "action": "halt", "args": {"reason": reason}},
        )
        if queue_error:
            raise Unavailable(f"the halt for {kernel.name} was not sent (broker and database unavailable): "
                              f"halt it on its host with kernelctl --state-dir {kernel.state_dir} halt") from None
        return None


def _halt_confirm(kernel: Kernel, command_id: str, reason: str, by: str) -> None:
    from . import tasks

    _enqueue(tasks.deliver_halt, args=(command_id, kernel.state_dir, reason, by), queue=halt_queue(kernel),
             what=f"confirmation of HALT {command_id} for kernel {kernel.name}")


def halt_deliver(*, command_id: str, state_dir: str, reason: str, by: str, confirm_wait_s: float = 2.0,
                 sync: bool = True) -> str:
    """The halt task, on the kernel's host: put the halt into control.json unless the console
    already did, then bring the kernel's confirmation into the console at once.

    Written when the halt's row is pending (the console could not reach the files) or not
    there (not committed yet, or the database is down: a halt waits for neither). Only
    confirmed when the row is delivered (the console wrote it) or final (the kernel reported
    it): a late message never re-halts a kernel released since. Returns "written" or
    "confirmed"; raises ControlError/OSError when control.json cannot be written (retried)."""
    row = None
    try:
        row = ControlCommand.objects.select_related("kernel").filter(command_id=command_id).first()
    except DatabaseError as exc:
        log.error("HALT %s: the database is unavailable (%s): writing the halt without it", command_id, exc)
    outcome = "confirmed"
    if row is None or row.status == ControlCommand.Status.PENDING:
        kernel_commands.halt(Path(state_dir), reason, by)
        outcome = "written"
        log.critical("HALT %s written into %s/control.json on this host (by %s): %s", command_id, state_dir, by, reason)
        if row is not None:
            try:
                ControlCommand.objects.filter(pk=row.pk, status=ControlCommand.Status.PENDING).update(
                    status=ControlCommand.Status.DELIVERED, delivered_at=timezone.now(), error="",
                    delivery_attempts=F("delivery_attempts") + 1)
            except DatabaseError as exc:
                log.error("HALT %s is written, but the database did not record it: %s", command_id, exc)
    if row is not None and sync:
        kernel_commands.wait_state(Path(state_dir), {"halted"}, confirm_wait_s)
        try:
            status_sync(kernel=row.kernel, on_host=True)
        except DatabaseError as exc:
            log.error("HALT %s: could not sync the kernel's answer: %s", command_id, exc)
    return outcome


def halt_release(*, kernel: Kernel, actor: Actor) -> ControlCommand:
    """Release a latched halt: one write of ``halt: false`` + ``release``. Conflict unless the
    kernel's last status says halted. The kernel stays paused until someone resumes it."""
    _check_permission(actor, "release")
    status_sync(kernel=kernel)
    kernel.refresh_from_db()
    return command_issue(kernel=kernel, action="release", actor=actor)


# ===================================================================== slots


def _invalid_config(exc: ValidationError, prefix: str = "") -> ServiceError:
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "config"
        field = f"{prefix}{loc}" if loc != "config" or not prefix else prefix.rstrip(".")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        errors.setdefault(field, msg)
    detail = "; ".join(f"{f}: {m}" for f, m in errors.items())
    return ServiceError(f"invalid slot configuration: {detail}", errors=errors)


def _strategies_dir() -> Path:
    configured = getattr(settings, "FORESIGHT_STRATEGIES_DIR", None)
    return Path(configured) if configured else Path(settings.BASE_DIR) / "strategies"


def _check_strategy_params(strategy: str, params: dict) -> None:
    loader = StrategyLoader(_strategies_dir())
    try:
        version = loader.load(strategy, 0)
    except ReloadFailed as exc:
        raise ServiceError(f"strategy {strategy!r} cannot be loaded: {exc}",
                           errors={"strategy": str(exc)}) from None
    try:
        version.params(params)
    except ValidationError as exc:
        raise _invalid_config(exc, prefix="params.") from None
    finally:
        version.unload()


@transaction.atomic
def slot_configure(*, slot: Slot, changes: dict, actor: Actor) -> ControlCommand:
    """Change a slot's configuration: validate the merged config (SlotConfig and the strategy's
    Params), save it, audit before/after, and send slot.configure with the whole new config."""
    _check_permission(actor, "slot.configure")
    changes = dict(changes or {})
    if "id" in changes:
        if changes.pop("id") != slot.slot_id:
            raise ServiceError("a slot's id cannot be changed", errors={"id": "cannot be changed"})
    unknown = sorted(set(changes) - set(Slot.CONFIG_FIELDS))
    if unknown:
        raise ServiceError(f"unknown slot fields: {', '.join(unknown)}",
                           errors={f: "unknown field" for f in unknown})
    before = slot.config()
    merged = {**before, **changes}
    try:
        config = SlotConfig.model_validate(merged)
    except ValidationError as exc:
        raise _invalid_config(exc) from None
    _check_strategy_params(config.strategy, config.params)
    after = config.model_dump(mode="json")
    for field in Slot.CONFIG_FIELDS:
        setattr(slot, field, after[field])
    slot.save(update_fields=list(Slot.CONFIG_FIELDS))
    changed = sorted(f for f in Slot.CONFIG_FIELDS if before.get(f) != after.get(f))
    audit_record(
        action="config.changed", actor=actor, kernel=slot.kernel, slot_id=slot.slot_id, outcome="saved",
        payload={"before": before, "after": after, "changed": changed},
    )
    args = {k: v for k, v in after.items() if k != "id"}
    return command_issue(kernel=slot.kernel, action="slot.configure", actor=actor, slot_id=slot.slot_id, args=args)


# ===================================================================== status sync

_SLOT_MIRROR_FIELDS = (
    "state", "fault", "strategy_version", "strategy_sha256", "position_qty", "entry_price", "last_price",
    "realized_pnl", "unrealized_pnl", "last_cycle_at", "next_cycle_at", "cycles", "missed_cycles",
    "running_config",
)


def _slot_mirror(s: SlotStatus) -> dict[str, Any]:
    return {
        "state": s.state,
        "fault": s.fault or "",
        "strategy_version": s.strategy_version,
        "strategy_sha256": s.strategy_sha256 or "",
        "position_qty": s.position.qty,
        "entry_price": s.position.entry_price,
        "last_price": s.last_price,
        "realized_pnl": s.position.realized_pnl,
        "unrealized_pnl": s.unrealized_pnl,
        "last_cycle_at": _parse_dt(s.last_cycle_at),
        "next_cycle_at": _parse_dt(s.next_cycle_at),
        "cycles": s.cycles,
        "missed_cycles": s.missed_cycles,
        "running_config": s.config.model_dump(mode="json") if s.config is not None else {},
    }


def _sync_slots(kernel: Kernel, st: Status) -> int:
    existing = {s.slot_id: s for s in Slot.objects.filter(kernel=kernel)}
    seen: set[str] = set()
    to_update: list[Slot] = []
    created = 0
    for s in st.slots:
        seen.add(s.id)
        mirror = _slot_mirror(s)
        slot = existing.get(s.id)
        if slot is None:
            cfg = s.config.model_dump(mode="json") if s.config is not None else {
                "symbol": s.symbol, "timeframe": s.timeframe, "strategy": s.strategy}
            Slot.objects.create(
                kernel=kernel, slot_id=s.id,
                **{f: cfg[f] for f in Slot.CONFIG_FIELDS if f in cfg},
                **mirror,
            )
            created += 1
            continue
        if any(getattr(slot, f) != v for f, v in mirror.items()):
            for f, v in mirror.items():
                setattr(slot, f, v)
            to_update.append(slot)
    for slot_id, slot in existing.items():
        if slot_id not in seen and slot.state != "unknown":
            slot.state = "unknown"
            to_update.append(slot)
    if to_update:
        Slot.objects.bulk_update(to_update, list(_SLOT_MIRROR_FIELDS), batch_size=500)
    return created


def _sync_fills(kernel: Kernel, st: Status) -> int:
    if not st.fills:
        return 0
    ids = [f.fill_id for f in st.fills]
    known = set(Fill.objects.filter(kernel=kernel, fill_id__in=ids).values_list("fill_id", flat=True))
    fresh = [
        Fill(kernel=kernel, fill_id=f.fill_id, client_order_id=f.client_order_id, slot_id=f.slot,
             side=f.side, qty=f.qty, price=f.price, fee=f.fee, pnl=f.pnl,
             at=datetime.fromtimestamp(f.ts_ms / 1000.0, tz=dt_timezone.utc))
        for f in st.fills if f.fill_id not in known
    ]
    Fill.objects.bulk_create(fresh, ignore_conflicts=True)
    return len(fresh)


def _sync_equity(kernel: Kernel, st: Status, now: datetime) -> bool:
    if st.ledger.equity is None:
        return False
    recent = now - timedelta(seconds=EQUITY_SAMPLE_EVERY_S)
    if EquitySample.objects.filter(kernel=kernel, at__gt=recent).exists():
        return False
    EquitySample.objects.create(
        kernel=kernel, at=now, equity=st.ledger.equity, cash=st.ledger.cash,
        realized_pnl=st.ledger.realized_pnl, unrealized_pnl=st.ledger.unrealized_pnl or 0.0,
    )
    return True


def _existing_keys(keys: Iterable[str]) -> set[str]:
    keys = list(keys)
    found: set[str] = set()
    for i in range(0, len(keys), 500):
        found.update(AuditEvent.objects.filter(dedupe_key__in=keys[i:i + 500]).values_list("dedupe_key", flat=True))
    return found


def _actor_of(command: ControlCommand | None, kernel: Kernel) -> Actor:
    if command is None:
        return Actor.for_kernel(kernel.name)
    return Actor(name=command.actor, source="kernel", user=command.user, ip=None)


def _ledger_only_results(kernel: Kernel, st: Status) -> list[CommandStatus]:
    """Results of delivered commands that status.json does not list: it keeps the latest 200,
    and a burst can scroll a result past it between two syncs. The kernel's ledger has them."""
    listed = {c.id for c in st.commands} | set(st.pending_commands)
    waiting = [cid for cid in ControlCommand.objects.filter(kernel=kernel, status=ControlCommand.Status.DELIVERED)
               .exclude(action="halt").order_by("pk").values_list("command_id", flat=True)[:5000]
               if cid not in listed]
    return list(_ledger_results(kernel, waiting).values())


def _sync_command_results(kernel: Kernel, st: Status, now: datetime,
                          extra: Iterable[CommandStatus] = ()) -> tuple[int, int]:
    """Each command result in status.json (and ``extra``, from the ledger) → the command row
    and one audit event."""
    results = {c.id: c for c in (*extra, *st.commands)}
    if not results:
        return 0, 0
    rows = {c.command_id: c for c in ControlCommand.objects.filter(kernel=kernel, command_id__in=list(results))
            .select_related("user")}
    resolved = 0
    for cid, res in results.items():
        row = rows.get(cid)
        if row is not None and row.status != res.result:
            ControlCommand.objects.filter(pk=row.pk).update(
                status=res.result, resolved_at=_parse_dt(res.at) or now, error=res.error or "",
                detail=_jsonable(res.detail) if res.detail is not None else None,
            )
            resolved += 1
    keys = {cid: _key("command.result", kernel.name, cid) for cid in results}
    done = _existing_keys(keys.values())
    audited = 0
    for cid, res in results.items():
        if keys[cid] in done:
            continue
        row = rows.get(cid)
        payload: dict[str, Any] = {"action": res.action, "error": res.error, "detail": res.detail, "at": res.at}
        if row is None:
            payload["unknown_to_console"] = True
        else:
            payload["issued_by"] = row.actor
        if audit_record(
            action=f"command.{res.result}", actor=_actor_of(row, kernel), kernel=kernel,
            slot_id=res.slot or "", command_id=cid, outcome=res.result, payload=payload,
            dedupe_key=keys[cid], at=_parse_dt(res.at),
        ):
            audited += 1
        if res.action == "release" and res.result == "applied" and isinstance(res.detail, dict):
            released = res.detail.get("released")
            if isinstance(released, dict) and released.get("since"):
                # A halt engaged and released between two syncs is still recorded, once.
                audited += _audit_halt_observed(kernel, released)
                audited += _audit_halt_cleared(kernel, released.get("since"), released.get("reason"), cid)
    return resolved, audited


def _sync_reloads(kernel: Kernel, st: Status) -> int:
    entries = [r for r in st.reloads if r.at and r.strategy and r.result]
    if not entries:
        return 0
    keys = [_key("reload", kernel.name, r.strategy, r.at, r.result) for r in entries]
    done = _existing_keys(keys)
    commands = {c.command_id: c for c in ControlCommand.objects.filter(
        kernel=kernel, command_id__in=[r.command_id for r in entries if r.command_id]).select_related("user")}
    audited = 0
    for r, key in zip(entries, keys):
        if key in done:
            continue
        row = commands.get(r.command_id) if r.command_id else None
        if audit_record(
            action=f"reload.{r.result}", actor=_actor_of(row, kernel), kernel=kernel,
            command_id=r.command_id or "", outcome=r.result,
            payload={"strategy": r.strategy, "old_sha256": r.old_sha256, "new_sha256": r.new_sha256,
                     "error": r.error, "lock_wait_ms": r.lock_wait_ms, "at": r.at},
            dedupe_key=key, at=_parse_dt(r.at),
        ):
            audited += 1
    return audited


def _audit_halt_observed(kernel: Kernel, halt: dict) -> int:
    return int(audit_record(
        action="halt.observed", actor=Actor.for_kernel(kernel.name), kernel=kernel, outcome="halted",
        payload={"since": halt.get("since"), "reason": halt.get("reason"),
                 "cancelled_orders": halt.get("cancelled_orders") or []},
        dedupe_key=_key("halt.observed", kernel.name, halt.get("since")), at=_parse_dt(halt.get("since")),
    ) is not None)


def _audit_halt_cleared(kernel: Kernel, since: Any, reason: Any, command_id: str = "") -> int:
    return int(audit_record(
        action="halt.cleared", actor=Actor.for_kernel(kernel.name), kernel=kernel, outcome="released",
        command_id=command_id, payload={"since": since, "reason": reason},
        dedupe_key=_key("halt.cleared", kernel.name, since),
    ) is not None)


def _sync_halt(kernel: Kernel, st: Status, prev: tuple[bool, str | None, str], now: datetime) -> int:
    prev_engaged, prev_since, prev_reason = prev
    audited = 0
    if st.halt.engaged:
        audited += _audit_halt_observed(kernel, st.halt.model_dump(mode="json"))
        ControlCommand.objects.filter(
            kernel=kernel, action="halt",
            status__in=[ControlCommand.Status.PENDING, ControlCommand.Status.DELIVERED],
        ).update(status=ControlCommand.Status.APPLIED, resolved_at=now,
                 detail={"halt_since": st.halt.since, "reason": st.halt.reason})
    elif prev_engaged and prev_since:
        audited += _audit_halt_cleared(kernel, prev_since, prev_reason)
    return audited


def _redeliver_and_expire(kernel: Kernel, st: Status | None, now: datetime) -> tuple[int, int]:
    """Where the kernel's files are: expire what outlived its time to live; send, in issue
    order, what is still pending (a failed delivery, a task lost with the broker, a process
    that died after its commit: the database, not the broker, is the record of what is owed);
    write pending halts; re-send what the kernel lost (a hand edit replaced control.json)."""
    expired = commands_expire_due(kernel=kernel, now=now)
    redelivered = 0
    pending = ControlCommand.objects.filter(kernel=kernel, status=ControlCommand.Status.PENDING).exclude(action="halt")
    due = pending.filter(Q(delivery_attempts__gt=0) | ~Q(error="")
                         | Q(issued_at__lte=now - timedelta(seconds=REDELIVER_AFTER_S)))
    last = due.select_related("kernel").order_by("-pk").first()
    if last is not None:
        # One delivery of the newest sends every older pending command with it, in order.
        redelivered = pending.filter(pk__lte=last.pk).count()
        command_deliver(command=last)
    redelivered += _halts_redeliver(kernel, now)
    if st is None:
        return redelivered, expired
    heartbeat = _parse_dt(st.heartbeat_at)
    seen = {c.id for c in st.commands} | set(st.pending_commands)
    if heartbeat is None:
        return redelivered, expired
    lost = ControlCommand.objects.filter(
        kernel=kernel, status=ControlCommand.Status.DELIVERED,
        delivered_at__lt=heartbeat - timedelta(seconds=REDELIVER_AFTER_S),
        delivery_attempts__lt=MAX_DELIVERY_ATTEMPTS,
    ).exclude(action__in=("halt", "release")).select_related("kernel")
    for command in lost:
        if command.command_id not in seen:
            _redeliver(command)
            redelivered += 1
    return redelivered, expired


def _halts_redeliver(kernel: Kernel, now: datetime) -> int:
    """Write the halts still pending (queued while the broker was down, or lost with it)."""
    written = 0
    for halt in ControlCommand.objects.filter(kernel=kernel, status=ControlCommand.Status.PENDING,
                                              action="halt").select_related("kernel").order_by("pk"):
        if ControlCommand.objects.filter(kernel=kernel, action="release", status=ControlCommand.Status.APPLIED,
                                         issued_at__gt=halt.issued_at).exists():
            _command_fail(halt, "not sent: the kernel was halted and released after it was issued", now)
            continue
        try:
            halt_deliver(command_id=halt.command_id, state_dir=kernel.state_dir, by=halt.actor,
                         reason=(halt.args or {}).get("reason") or f"halted by {halt.actor}", sync=False)
            written += 1
        except (ControlError, OSError, ValueError) as exc:
            log.critical("HALT %s for kernel %s could not be written into %s: %s", halt.command_id, kernel.name,
                         kernel.state_dir, exc)
    return written


def status_sync_if_stale(*, kernel: Kernel, max_age_s: float = 1.0) -> dict:
    """status_sync, unless the mirror is recent (synced less than ``max_age_s`` ago) and
    status.json has not been rewritten since: a read endpoint polled by many clients must not
    turn every GET into a write, and must never answer older than the kernel's last word."""
    synced = kernel.status_synced_at
    if synced is not None and (timezone.now() - synced).total_seconds() < max_age_s:
        try:
            written = os.stat(_status_path(kernel)).st_mtime
        except OSError:
            written = None
        if written is not None and written < synced.timestamp():
            return {"kernel": kernel.name, "status": "fresh", "synced_at": synced.isoformat()}
    return status_sync(kernel=kernel)


def status_sync(*, kernel: Kernel, on_host: bool | None = None) -> dict:
    """Mirror the kernel's status.json into the database and audit its outcomes, each once.

    Updates the Kernel and Slot mirrors (creating Slot rows the kernel reports), Fill rows
    and an equity sample; turns command results (from status.json, and from the kernel's
    ledger for results status.json no longer lists), reload results and halt changes into
    audit events keyed by what the kernel reported; re-delivers pending commands and expires
    stale ones; flushes the audit spool. A missing or unreadable status.json is reported in
    the summary (and in ``control_error``), never raised.

    Only where the kernel's files are: ``on_host`` defaults to :func:`kernel_is_local`; its
    host's worker passes True (host_sync). Anywhere else (a console syncing a kernel behind a
    queue) the files are not touched: only expired commands are expired, "status" is "remote",
    and the mirror is whatever the host's worker last wrote."""
    summary: dict[str, Any] = {"kernel": kernel.name, "status": "ok", "state": kernel.state, "audited": 0,
                               "commands_resolved": 0, "fills": 0, "slots_created": 0, "redelivered": 0,
                               "expired": 0, "spool_flushed": audit_spool_flush()}
    now = timezone.now()
    if not (kernel_is_local(kernel) if on_host is None else on_host):
        summary["status"] = "remote"
        summary["expired"] = commands_expire_due(kernel=kernel, now=now)
        return summary
    try:
        st = read_status(_status_path(kernel))
    except StatusUnreadable as exc:
        st = None
        summary.update(status="unreadable", error=str(exc))
    if st is None and summary["status"] == "ok":
        summary["status"] = "missing"
    if st is not None:
        with transaction.atomic():
            k = Kernel.objects.select_for_update().get(pk=kernel.pk)
            prev = (k.halt_engaged, _iso(k.halt_since), k.halt_reason)
            unchanged = (k.status.get("heartbeat_at") == st.heartbeat_at and k.status.get("pid") == st.pid
                         and k.status.get("tick") == st.tick)
            if not unchanged:
                k.state = st.state
                k.heartbeat_at = _parse_dt(st.heartbeat_at)
                k.pid = st.pid
                k.tick = st.tick
                k.halt_engaged = st.halt.engaged
                k.halt_since = _parse_dt(st.halt.since)
                k.halt_reason = st.halt.reason or ""
                if st.halt.engaged:
                    k.halt_requested_at = None
                k.control_error = st.control_error or ""
                k.status = st.model_dump(mode="json")
                k.status_synced_at = now
                k.save(update_fields=[
                    "state", "heartbeat_at", "pid", "tick", "halt_engaged", "halt_since", "halt_reason",
                    "halt_requested_at", "control_error", "status", "status_synced_at"])
                summary["slots_created"] = _sync_slots(k, st)
                summary["fills"] = _sync_fills(k, st)
                _sync_equity(k, st, now)
                summary["audited"] += _sync_halt(k, st, prev, now)
                resolved, audited = _sync_command_results(k, st, now, extra=_ledger_only_results(k, st))
                summary["commands_resolved"] = resolved
                summary["audited"] += audited + _sync_reloads(k, st)
            summary["state"] = k.state
        _copy_mirror(k, kernel)
    summary["redelivered"], summary["expired"] = _redeliver_and_expire(kernel, st, now)
    return summary


def host_sync(*, queue: str) -> list[dict]:
    """The periodic sync of one host, run by that host's worker (the sync_host_kernels task,
    one beat entry per host queue): every kernel whose Kernel.queue is ``queue`` ("" = the
    console's own machine) is synced from its files. One broken kernel does not stop the others."""
    summaries: list[dict] = [{"queue": queue, "spool_flushed": audit_spool_flush()}]
    for kernel in Kernel.objects.filter(queue=queue):
        try:
            summaries.append(status_sync(kernel=kernel, on_host=True))
        except DatabaseError:
            raise
        except Exception:  # noqa: BLE001 - one broken kernel must not stop the others' sync
            log.exception("status sync of kernel %s failed", kernel.name)
    return summaries


def _copy_mirror(source: Kernel, target: Kernel) -> None:
    if source is target:
        return
    for f in ("state", "heartbeat_at", "pid", "tick", "halt_engaged", "halt_since", "halt_reason",
              "halt_requested_at", "control_error", "status", "status_synced_at"):
        setattr(target, f, getattr(source, f))


# ===================================================================== API tokens


def _token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@transaction.atomic
def token_create(*, user, name: str, actor: Actor | None = None) -> tuple[ApiToken, str]:
    """A new API token for ``user``: the raw ``fst_<prefix>_<secret>`` is returned once; only
    its sha256 is stored."""
    name = (name or "").strip()
    if not name:
        raise ServiceError("a token needs a name", errors={"name": "required"})
    if len(name) > 100:
        raise ServiceError("a token name is at most 100 characters", errors={"name": "too long"})
    prefix = secrets.token_hex(4)
    raw = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(user=user, name=name, prefix=prefix, token_hash=_token_hash(raw))
    actor = actor or Actor(name=user.get_username(), source="system", user=user)
    audit_record(action="token.created", actor=actor, outcome="ok",
                 payload={"token_id": token.pk, "name": name, "prefix": prefix, "for": user.get_username()})
    return token, raw


@transaction.atomic
def token_revoke(*, token: ApiToken, actor: Actor) -> None:
    """Revoke a token: its owner or a superuser (or the CLI) may."""
    if actor.user is not None:
        if actor.user.pk != token.user_id and not actor.user.is_superuser:
            raise NotAllowed("you may revoke only your own tokens")
    elif actor.source not in ("cli", "system"):
        raise NotAllowed("revoking a token needs a logged-in user")
    if token.revoked_at is not None:
        return
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit_record(action="token.revoked", actor=actor, outcome="ok",
                 payload={"token_id": token.pk, "name": token.name, "prefix": token.prefix,
                          "for": token.user.get_username()})


def token_authenticate(raw: str):
    """The active user a raw token belongs to, or None (unknown, malformed or revoked)."""
    if not raw or not isinstance(raw, str) or len(raw) > 200:
        return None
    parts = raw.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    token = ApiToken.objects.select_related("user").filter(token_hash=_token_hash(raw.strip()),
                                                           prefix=parts[1]).first()
    if token is None or token.revoked_at is not None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at < now - timedelta(seconds=TOKEN_TOUCH_EVERY_S):
        try:
            with transaction.atomic():
                ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        except DatabaseError as exc:  # a locked database must not lock people out of the halt
            log.warning("token %s: could not update last_used_at: %s", token.prefix, exc)
    return token.user


# ===================================================================== roles

TRADING_MODELS = ("kernel", "slot", "controlcommand", "auditevent", "apitoken", "fill", "equitysample")
ROLE_VIEWER = "Viewer"
ROLE_OPERATOR = "Operator"
ROLE_RISK = "Risk"


def role_permissions() -> dict[str, list[str]]:
    """Role name → permission codenames (all in the trading app)."""
    view = [f"view_{m}" for m in TRADING_MODELS]
    operator = view + ["operate_kernel", "engage_halt"]
    risk = operator + ["release_halt", "rollback_strategy", "configure_slot"]
    return {ROLE_VIEWER: view, ROLE_OPERATOR: operator, ROLE_RISK: risk}


def _roles_setup(group_model, permission_model) -> None:
    for role, codenames in role_permissions().items():
        perms = list(permission_model.objects.filter(content_type__app_label="trading", codename__in=codenames))
        missing = set(codenames) - {p.codename for p in perms}
        if missing:
            raise ServiceError(f"permissions missing (run migrate first): {', '.join(sorted(missing))}")
        group, _ = group_model.objects.get_or_create(name=role)
        group.permissions.set(perms)


@transaction.atomic
def roles_setup() -> None:
    """Groups Viewer, Operator and Risk with exactly their permissions; idempotent."""
    _roles_setup(Group, Permission)
