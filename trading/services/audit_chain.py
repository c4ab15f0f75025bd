"""The audit log's hash chain: each event stores the hash of the event before it and its own
hash, sha256(previous hash + the event's canonical content); verifying walks the events in
id order and names the first one whose link does not hold.

Deleting, editing or slipping in an event breaks the chain at that event (the triggers of
migrations 0002 and 0005 already refuse UPDATE, DELETE and a reused id or dedupe key; the
chain is what still tells when someone with the database file rewrote it anyway, unless
they recompute every hash after their edit: keep a copy of the last hash elsewhere —
``verifyaudit`` prints it — to catch that too).

Appends are serialised, so that each reads the hash its predecessor committed: on SQLite
every transaction takes the write lock at BEGIN (transaction_mode IMMEDIATE in settings);
on PostgreSQL a transaction-scoped advisory lock (held until commit).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timezone as dt_timezone
from decimal import Decimal
from typing import Any

from django.db import connection

GENESIS = "0" * 64
CONTENT_FIELDS = ("at", "actor", "user_id", "source", "ip", "action", "kernel_name", "slot_id", "command_id",
                  "outcome", "payload", "dedupe_key")
_PG_LOCK_KEY = 0x466F7265_41756474  # "ForeAudt": pg_advisory_xact_lock's key for the chain


def _canonical(value: Any) -> Any:
    """JSON values as every backend hands them back: PostgreSQL's jsonb keeps numbers as
    decimals, so 1e20 comes back as the integer 100000000000000000000; integral floats are
    hashed as those integers, other floats as they are."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(Decimal(repr(value)))
    return value


def audit_content(event: Any) -> str:
    """An event's canonical content: its fields (not its id, nor its hashes) as sorted JSON."""
    fields = {name: getattr(event, name) for name in CONTENT_FIELDS}
    fields["at"] = fields["at"].astimezone(dt_timezone.utc).isoformat()
    fields["payload"] = _canonical(fields["payload"])
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def audit_hash(prev_hash: str, event: Any) -> str:
    return hashlib.sha256((prev_hash + audit_content(event)).encode("utf-8")).hexdigest()


def audit_chain_lock() -> None:
    """Serialise appends until the caller's transaction ends (call inside it)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_LOCK_KEY])
    elif connection.vendor == "sqlite":
        if connection.settings_dict.get("OPTIONS", {}).get("transaction_mode") != "IMMEDIATE":
            raise RuntimeError("the audit chain needs SQLite transactions that take the write lock at BEGIN "
                               "(OPTIONS transaction_mode IMMEDIATE)")
    else:
        raise RuntimeError(f"the audit chain has no append lock for {connection.vendor}")


@dataclass(frozen=True)
class ChainCheck:
    events: int
    last_hash: str
    broken_id: int | None = None
    problem: str = ""


def audit_chain_verify(events: Any) -> ChainCheck:
    """Walk ``events`` (AuditEvents in id order) and stop at the first broken link."""
    prev, count = GENESIS, 0
    for event in events:
        if event.prev_hash != prev:
            return ChainCheck(count, prev, event.id, "its previous hash is not the hash of the event before it "
                                                     "(an event before it was removed or rewritten, or it was slipped in)")
        if event.hash != audit_hash(prev, event):
            return ChainCheck(count, prev, event.id, "its content does not match its hash (it was rewritten)")
        prev, count = event.hash, count + 1
    return ChainCheck(count, prev)
