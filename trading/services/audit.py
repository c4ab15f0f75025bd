"""The audit log: the ONE place AuditEvents are created.

Each kernel outcome is audited exactly once: outcomes carry an ``AuditEvent.dedupe_key``
derived from what the kernel reported, so recording one again, in any process, is a no-op.
Each event is linked into the hash chain (audit_chain) here, under the lock that serialises
appends; ``manage.py verifyaudit`` checks the chain.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..models import AuditEvent, Kernel
from .actors import Actor, clean_ip
from .audit_chain import GENESIS, ChainCheck, audit_chain_lock, audit_chain_verify, audit_hash


def audit_key(*parts: Any) -> str:
    """A dedupe key: readable when it fits the column, hashed when it does not."""
    key = ":".join(str(p) for p in parts)
    if len(key) <= 200:
        return key
    return f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def jsonable(value: Any) -> Any:
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
    """Append one audit event: the ONE place AuditEvents are created, each linked to the one
    before it (its hash covers the previous event's hash and its own content).

    With a ``dedupe_key`` the event is recorded at most once, however often (and in however
    many processes) this is called: a duplicate returns None."""
    actor = actor or Actor.system()
    if actor.token:
        # Which API token acted: in the payload, so the hash chain covers it like the rest.
        payload = {**(payload or {}), "token": actor.token}
    event = AuditEvent(
        at=at or timezone.now(),
        actor=actor.name[:200],
        user_id=getattr(actor.user, "pk", None),
        source=actor.source[:8],
        ip=clean_ip(actor.ip),
        action=action[:64],
        kernel_name=(kernel.name if kernel is not None else kernel_name or "")[:64],
        slot_id=(slot_id or "")[:64],
        command_id=(command_id or "")[:128],
        outcome=(outcome or "")[:32],
        payload=jsonable(payload or {}),
        dedupe_key=dedupe_key,
    )
    event.ip = AuditEvent._meta.get_field("ip").get_prep_value(event.ip)  # as the database keeps it
    with transaction.atomic():
        audit_chain_lock()
        if dedupe_key and AuditEvent.objects.filter(dedupe_key=dedupe_key).exists():
            return None
        event.prev_hash = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS
        event.hash = audit_hash(event.prev_hash, event)
        try:
            with transaction.atomic():
                event.save(force_insert=True)
        except IntegrityError:
            if dedupe_key and AuditEvent.objects.filter(dedupe_key=dedupe_key).exists():
                return None  # another process recorded it first
            raise
    return event


def audit_verify() -> ChainCheck:
    """The audit log's hash chain walked from its first event: how many events hold, and the
    first broken one if any (``manage.py verifyaudit``)."""
    return audit_chain_verify(AuditEvent.objects.order_by("id").iterator(chunk_size=2000))
