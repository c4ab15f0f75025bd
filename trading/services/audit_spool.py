"""The audit spool: where audit events wait while the database is down.

Halt never waits on the database: when recording fails, the event goes to a local spool
file (one fsynced JSON line per event) that the flush writes to the database later,
exactly once (each spooled event carries a dedupe key).

Each line is authenticated: an HMAC-SHA256 ("mac") under a key derived from SECRET_KEY with
a salt of its own (django.utils.crypto.salted_hmac), which only the service has. A line
without a valid one (appended by hand, edited, or from another installation) is not stored:
it is kept aside in ``<spool>.rejected``, logged, and audited as "audit.spool_refused".
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from datetime import datetime, timezone as dt_timezone
from pathlib import Path
from typing import Any, Callable

import filelock
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from ..models import ControlCommand, Kernel
from .actors import Actor, clean_ip
from .audit import audit_key, audit_record
from .kernel_records import kernel_lookup
from .timestamps import parse_dt

log = logging.getLogger("trading.services")


def audit_spool_path() -> Path:
    configured = getattr(settings, "FORESIGHT_AUDIT_SPOOL", None)
    return Path(configured) if configured else Path(settings.BASE_DIR) / "var" / "audit-spool.jsonl"


SPOOL_MAC_SALT = "foresight.audit-spool.v1"  # a key of its own, derived from SECRET_KEY


def _spool_mac(event: dict[str, Any]) -> str:
    body = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return salted_hmac(SPOOL_MAC_SALT, body, algorithm="sha256").hexdigest()


def _spool_signed(event: dict[str, Any]) -> dict[str, Any]:
    event = json.loads(json.dumps(event, default=str))  # what a reader will see, then signed
    return {**event, "mac": _spool_mac(event)}


def _spool_verified(line: str) -> dict[str, Any] | None:
    """The event of a spool line, or None unless it is a JSON object with a valid mac."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    mac = event.pop("mac", None)
    if not isinstance(mac, str) or not constant_time_compare(mac, _spool_mac(event)):
        return None
    return event


def _spool_lock(path: Path, timeout: float) -> filelock.BaseFileLock:
    return filelock.FileLock(str(path) + ".lock", timeout=timeout, mode=0o600)  # private, as the spool (trading/checks.py)


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
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = (json.dumps(_spool_signed(event), ensure_ascii=False) + "\n").encode("utf-8")

    def write() -> None:
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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


def spool_event(
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
    """Spool one event; ``command`` describes a command row to create with it (a command
    written into control.json while the database was down)."""
    event = {
        "action": action,
        "actor": actor.name,
        "user_id": getattr(actor.user, "pk", None),
        "source": actor.source,
        "ip": clean_ip(actor.ip),
        "kernel_name": kernel_name,
        "state_dir": state_dir,
        "slot_id": slot_id,
        "command_id": command_id,
        "outcome": outcome,
        "payload": payload or {},
        "dedupe_key": dedupe_key or audit_key("spool", secrets.token_hex(16)),
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
    return spool_event(action=action, actor=actor, kernel_name=kernel_name, slot_id=slot_id,
                       command_id=command_id, outcome=outcome, payload=payload, dedupe_key=dedupe_key)


def _spool_write(event: dict[str, Any], register_kernel: Callable[..., Kernel]) -> bool:
    """Write one spooled event (and the command row it describes) to the database."""
    if event.get("state_dir"):
        kernel = register_kernel(state_dir=event["state_dir"])
    else:
        kernel = kernel_lookup(event.get("kernel_name") or "", "")
    kernel_name = kernel.name if kernel is not None else event.get("kernel_name") or ""
    at = parse_dt(event.get("at")) or timezone.now()
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
                "ip": clean_ip(event.get("ip")),
                "issued_at": at,
                # A halt queued for another host is still owed there (its worker writes it).
                **({"status": ControlCommand.Status.PENDING, "delivered_at": None, "delivery_attempts": 0}
                   if command.get("status") == ControlCommand.Status.PENDING else
                   {"status": ControlCommand.Status.DELIVERED, "delivered_at": at, "delivery_attempts": 1}),
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


def _spool_refuse(path: Path, batch: Path, line: str) -> None:
    """A line without a valid mac: kept aside, logged, audited (once per line), never stored."""
    digest = hashlib.sha256(line.encode("utf-8", errors="replace")).hexdigest()
    log.error("audit spool %s: a line without a valid signature is refused (kept in %s.rejected): %r",
              batch, path, line[:200])
    audit_record(action="audit.spool_refused", actor=Actor.system(), outcome="refused",
                 payload={"reason": "no valid signature: appended or edited outside the console",
                          "line_sha256": digest, "line": line[:500], "spool": str(path)},
                 dedupe_key=audit_key("audit.spool_refused", digest))
    with open(f"{path}.rejected", "a", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(line + "\n")


def spool_flush(*, register_kernel: Callable[..., Kernel]) -> int:
    """Write spooled audit events to the database; returns how many were recorded.

    ``register_kernel`` finds (registering it if need be) the kernel at an event's state dir:
    the caller passes kernel_for_state_dir, which syncs a kernel it registers, and a sync
    flushes this spool, so the spool cannot import it.

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
            event = _spool_verified(line)
            try:
                with transaction.atomic():
                    if event is None:
                        _spool_refuse(path, batch, line)
                        continue
                    recorded += _spool_write(event, register_kernel)
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
