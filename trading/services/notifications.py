"""Telling a human: audit events worth a message (NOTIFY) → one NotificationDelivery per event
and target → sent, retried with backoff, rate-limited per channel, each outcome audited
(notify.sent, notify.failed).

Events are the audit log's, so each is told once however many syncs saw it: the status
mirror and the stale check record each outcome once (dedupe keys), and a delivery row is
unique per (event, channel, target). Nothing here runs on the halt path: halt_engage writes
control.json and returns; its audit event is told later, by whoever runs
:func:`notifications_run` (the ``send_notifications`` task on the console's worker when Redis
is configured, else ``syncstatus`` after each round, with a time budget).
"""
from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any, Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from ..models import AuditEvent, NotificationDelivery
from .actors import Actor
from .audit import audit_key, audit_record
from .notification_channels import DeliveryFailed, Target, notification_targets, notify_settings, send_to
from .routing import tasks_run_here
from .task_queue import SEND_NOTIFICATIONS, task_enqueue

log = logging.getLogger("trading.notifications")

# On the first run (no delivery yet) only events this recent are told: not the whole history.
FIRST_RUN_LOOKBACK = timedelta(minutes=10)
CLAIM_FOR = timedelta(minutes=2)  # a sender that died mid-try frees its deliveries after this


def _halt_observed(p: dict) -> str:
    text = f"Kernel {{kernel}} is HALTED since {p.get('since')}: {p.get('reason') or 'no reason given'}."
    cancelled = p.get("cancelled_orders") or []
    return text + (f" {len(cancelled)} resting order(s) cancelled." if cancelled else "")


# action → (severity, a one-line message from the event's payload; {kernel} and {slot} filled in)
NOTIFY: dict[str, tuple[str, Callable[[dict], str]]] = {
    "halt.engaged": ("critical", lambda p: "HALT requested for kernel {kernel} by {actor}: "
                     f"{p.get('reason') or 'no reason given'}."),
    "halt.observed": ("critical", _halt_observed),
    "halt.cleared": ("warning", lambda p: "Halt RELEASED on kernel {kernel} (halted since "
                     f"{p.get('since')}); it stays paused until resumed."),
    "reload.failed": ("warning", lambda p: f"Reload of strategy {p.get('strategy')} FAILED on kernel "
                      f"{{kernel}}: {p.get('error')}. The previous version keeps running."),
    "reload.abandoned": ("warning", lambda p: f"Reload of strategy {p.get('strategy')} was ABANDONED on "
                         f"kernel {{kernel}}: {p.get('error')}. The previous version keeps running."),
    "reload.auto_rolled_back": ("warning", lambda p: f"Canary of strategy {p.get('strategy')} on kernel "
                                f"{{kernel}} was ROLLED BACK automatically: {p.get('error')}."),
    "kernel.stale": ("critical", lambda p: "Kernel {kernel} is NOT REPORTING: last heartbeat "
                     f"{p.get('heartbeat_at')} ({p.get('age_s')} s before the check) while its state was "
                     f"{p.get('state')}. It may be hung or killed."),
    "kernel.recovered": ("info", lambda p: "Kernel {kernel} is REPORTING AGAIN (silent since "
                         f"{p.get('silent_since')}); state {p.get('state')}."),
    "kernel.stopped": ("warning", lambda p: f"Kernel {{kernel}} STOPPED cleanly at {p.get('stopped_at')} "
                       f"(pid {p.get('pid')}). Nothing trades until it is started again."),
    "slot.faulted": ("warning", lambda p: f"Slot {{slot}} on kernel {{kernel}} FAULTED: {p.get('fault')}"),
    "reconcile.mismatch": ("critical", lambda p: "Kernel {kernel}: startup reconciliation found what it "
                           f"could not settle: {p.get('summary')}"),
    "order.in_doubt": ("critical", lambda p: f"Kernel {{kernel}}, slot {{slot}}: order "
                       f"{p.get('client_order_id')} has an UNKNOWN outcome ({p.get('error')}); the slot sends "
                       "no new order until the broker answers. Check it at the exchange."),
}


def notification_message(event: AuditEvent) -> tuple[str, dict[str, Any]]:
    """(text, structured fields) for one audit event of NOTIFY."""
    severity, render = NOTIFY[event.action]
    payload = event.payload if isinstance(event.payload, dict) else {}
    text = render(payload).format(kernel=event.kernel_name or "?", slot=event.slot_id or "?", actor=event.actor)
    fields = {"event": event.action, "severity": severity, "kernel": event.kernel_name, "slot": event.slot_id,
              "at": event.at.isoformat(), "actor": event.actor, "command_id": event.command_id,
              "audit_id": event.pk, "detail": payload}
    return f"[foresight {severity}] {text}", fields


def notification_backoff(*, attempts: int, base_s: float, max_s: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: base, 2×base, 4×base..., capped."""
    return min(max_s, base_s * (2.0 ** max(attempts - 1, 0)))


def notifications_collect(*, now: datetime | None = None) -> int:
    """A pending delivery per (new NOTIFY audit event, configured target); how many were made."""
    targets = notification_targets()
    if not targets:
        return 0
    now = now or timezone.now()
    cursor = NotificationDelivery.objects.aggregate(m=Max("audit_event_id"))["m"]
    events = AuditEvent.objects.filter(action__in=list(NOTIFY)).order_by("id")
    events = events.filter(id__gt=cursor) if cursor is not None else events.filter(at__gte=now - FIRST_RUN_LOOKBACK)
    made = 0
    for event in events[:500]:
        text, fields = notification_message(event)
        key = event.dedupe_key or f"audit:{event.pk}"
        for target in targets:
            try:
                with transaction.atomic():
                    NotificationDelivery.objects.create(
                        event_key=key, audit_event_id=event.pk, action=event.action, kernel_name=event.kernel_name,
                        channel=target.channel, target=target.id, text=text, fields=fields, next_attempt_at=now)
                made += 1
            except IntegrityError:
                pass  # another sender made it first
    return made


def _rate_limited(channel: str, now: datetime, per_minute: int) -> datetime | None:
    """When the channel may send again, if it sent ``per_minute`` in the last minute."""
    recent = list(NotificationDelivery.objects.filter(channel=channel, last_attempt_at__gt=now - timedelta(minutes=1))
                  .order_by("-last_attempt_at").values_list("last_attempt_at", flat=True)[:per_minute])
    if len(recent) < per_minute:
        return None
    return recent[-1] + timedelta(minutes=1)


def _claim(row: NotificationDelivery, now: datetime) -> bool:
    return NotificationDelivery.objects.filter(pk=row.pk, status=NotificationDelivery.Status.PENDING).exclude(
        claimed_until__gt=now).update(claimed_until=now + CLAIM_FOR) == 1


def _deliver(row: NotificationDelivery, target: Target, now: datetime, cfg: dict) -> bool:
    subject = f"[foresight] {row.action} {row.kernel_name}".strip()
    attempt = row.attempts + 1
    audit = {"channel": row.channel, "target": target.label, "event": row.action, "event_key": row.event_key,
             "attempt": attempt}
    try:
        send_to(target, text=row.text, subject=subject, fields=row.fields)
    except DeliveryFailed as exc:
        final = attempt >= int(cfg.get("max_attempts") or 8)
        delay = notification_backoff(attempts=attempt, base_s=float(cfg.get("retry_s", 2.0)),
                                     max_s=float(cfg.get("retry_max_s", 300.0)))
        NotificationDelivery.objects.filter(pk=row.pk).update(
            attempts=attempt, last_attempt_at=now, claimed_until=None, last_error=str(exc),
            next_attempt_at=now + timedelta(seconds=delay),
            status=NotificationDelivery.Status.FAILED if final else NotificationDelivery.Status.PENDING)
        audit_record(action="notify.failed", actor=Actor.system(), kernel_name=row.kernel_name,
                     outcome="given_up" if final else "retrying",
                     payload={**audit, "error": str(exc), "retry_in_s": None if final else delay},
                     dedupe_key=audit_key("notify.failed", row.event_key, row.channel, row.target, attempt))
        log.warning("notification %s via %s failed (try %d%s): %s", row.action, target.label, attempt,
                    ", given up" if final else f", next in {delay:.0f} s", exc)
        return False
    NotificationDelivery.objects.filter(pk=row.pk).update(
        attempts=attempt, last_attempt_at=now, claimed_until=None, last_error="", sent_at=timezone.now(),
        status=NotificationDelivery.Status.SENT)
    audit_record(action="notify.sent", actor=Actor.system(), kernel_name=row.kernel_name, outcome="sent",
                 payload=audit, dedupe_key=audit_key("notify.sent", row.event_key, row.channel, row.target))
    return True


def notifications_dispatch(*, now: datetime | None = None, budget_s: float | None = None) -> dict[str, int]:
    """One try of each due delivery, oldest first, within each channel's rate; stops starting
    new tries after ``budget_s`` seconds (the sync loop's bound). Counts of sent, failed, deferred."""
    cfg = notify_settings()
    targets = {(t.channel, t.id): t for t in notification_targets()}
    now = now or timezone.now()
    started = time.monotonic()
    done = {"sent": 0, "failed": 0, "deferred": 0}
    due = NotificationDelivery.objects.filter(status=NotificationDelivery.Status.PENDING,
                                              next_attempt_at__lte=now).order_by("next_attempt_at", "id")
    for row in due[:200]:
        if budget_s is not None and time.monotonic() - started > budget_s:
            break
        target = targets.get((row.channel, row.target))
        if target is None:  # its channel was unconfigured since: nothing to send it to
            continue
        wait_until = _rate_limited(row.channel, now, int(cfg.get("per_minute") or 20))
        if wait_until is not None:
            NotificationDelivery.objects.filter(pk=row.pk).update(
                next_attempt_at=wait_until + timedelta(seconds=random.uniform(0, 1)))
            done["deferred"] += 1
            continue
        if not _claim(row, now):
            continue
        done["sent" if _deliver(row, target, now, cfg) else "failed"] += 1
    return done


def notifications_run(*, now: datetime | None = None, budget_s: float | None = None) -> dict[str, int]:
    """Collect new events, then send what is due."""
    made = notifications_collect(now=now)
    return {"queued": made, **notifications_dispatch(now=now, budget_s=budget_s)}


def notifications_after_sync() -> dict[str, Any]:
    """The sync round's share: without a broker, send now (bounded by the channel timeout, so
    the next round starts soon); with one, ask the console's worker to (beat asks too). Never
    raises: a notification must not break the sync."""
    if not notification_targets():
        return {"notifications": "none configured"}
    try:
        if tasks_run_here():
            return notifications_run(budget_s=float(notify_settings().get("timeout_s") or 5.0))
        error = task_enqueue(name=SEND_NOTIFICATIONS, args=(), queue=settings.FORESIGHT_CONSOLE_QUEUE,
                             what="notifications")
        return {"notifications": error or "queued"}
    except Exception:  # noqa: BLE001 - a notification failure never breaks the sync
        log.exception("notifications failed after the sync round")
        return {"notifications": "failed"}
