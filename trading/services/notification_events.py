"""What in a kernel's new status.json is worth telling a human, recorded as audit events (each
once, keyed by what the kernel reported) for services/notifications.py to send.

Called by the status mirror with the status it held before (``prev_status``, its heartbeat):
a clean stop (the kernel's last status says "stopped"), the recovery of a kernel that was
reported stale, a slot newly faulted, a startup reconciliation that found what it could not
settle, an order whose outcome is unknown. Halts, reloads and the stale check are audited
where they happen already (status_mirror, kernel_records).
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from kernel.protocol import Status

from ..models import AuditEvent, Kernel
from .actors import Actor
from .audit import audit_key, audit_record
from .timestamps import iso, parse_dt


def _record(kernel: Kernel, action: str, key: tuple, *, outcome: str, slot_id: str = "",
            payload: dict[str, Any]) -> int:
    return int(audit_record(
        action=action, actor=Actor.for_kernel(kernel.name), kernel=kernel, slot_id=slot_id, outcome=outcome,
        payload=payload, dedupe_key=audit_key(action, kernel.name, *key),
    ) is not None)


def _stopped(kernel: Kernel, st: Status, prev_status: dict) -> int:
    if st.state != "stopped" or prev_status.get("state") == "stopped":
        return 0
    return _record(kernel, "kernel.stopped", (st.started_at, st.heartbeat_at), outcome="stopped",
                   payload={"pid": st.pid, "stopped_at": st.heartbeat_at, "started_at": st.started_at})


def _recovered(kernel: Kernel, st: Status, prev_heartbeat: datetime | None) -> int:
    """The kernel reports again after a stale episode: the episode's key is its last heartbeat."""
    if prev_heartbeat is None or parse_dt(st.heartbeat_at) == prev_heartbeat:
        return 0
    stale_key = audit_key("kernel.stale", kernel.name, iso(prev_heartbeat))
    if not AuditEvent.objects.filter(dedupe_key=stale_key).exists():
        return 0
    return _record(kernel, "kernel.recovered", (iso(prev_heartbeat),), outcome=st.state,
                   payload={"silent_since": iso(prev_heartbeat), "heartbeat_at": st.heartbeat_at,
                            "state": st.state, "pid": st.pid})


def _faults(kernel: Kernel, st: Status, prev_status: dict) -> int:
    before = {s.get("id"): s.get("fault") for s in prev_status.get("slots") or [] if isinstance(s, dict)}
    done = 0
    for s in st.slots:
        if s.fault and s.fault != before.get(s.id):
            digest = hashlib.sha256(s.fault.encode()).hexdigest()[:12]
            done += _record(kernel, "slot.faulted", (s.id, digest, st.heartbeat_at), outcome="faulted",
                            slot_id=s.id, payload={"fault": s.fault, "strategy": s.strategy,
                                                   "version": s.strategy_version})
    return done


def _reconciliation(kernel: Kernel, st: Status) -> int:
    found = st.ledger.reconciled
    if not isinstance(found, dict):
        return 0
    if not (found.get("unknown") or found.get("unknown_open_orders") or found.get("position_mismatches")
            or found.get("errors")):
        return 0
    return _record(kernel, "reconcile.mismatch", (found.get("at"),), outcome="mismatch",
                   payload={"summary": found.get("summary"), "at": found.get("at"),
                            "unknown": found.get("unknown"), "unknown_open_orders": found.get("unknown_open_orders"),
                            "position_mismatches": found.get("position_mismatches"), "errors": found.get("errors")})


def _orders_in_doubt(kernel: Kernel, st: Status) -> int:
    done = 0
    for s in st.slots:
        order = s.last_order if isinstance(s.last_order, dict) else {}
        cid = order.get("client_order_id")
        if order.get("status") == "unknown" and cid:
            done += _record(kernel, "order.in_doubt", (cid,), outcome="unknown", slot_id=s.id,
                            payload={"client_order_id": cid, "side": order.get("side"), "qty": order.get("qty"),
                                     "error": order.get("error")})
    return done


def status_events_record(*, kernel: Kernel, st: Status, prev_status: dict,
                         prev_heartbeat: datetime | None) -> int:
    """Audit what the move from ``prev_status`` to ``st`` tells; how many events were recorded."""
    return (_stopped(kernel, st, prev_status or {}) + _recovered(kernel, st, prev_heartbeat)
            + _faults(kernel, st, prev_status or {}) + _reconciliation(kernel, st) + _orders_in_doubt(kernel, st))
