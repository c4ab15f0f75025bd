"""The audit log read as operator actions: one row per action, its outcome joined.

The audit log itself is append-only rows, several per action (``command.issued``, then the
kernel's ``command.applied`` …, ``reload.loaded``); this is a read over them, never a
rewrite: each action's event is annotated with the fate of its command row (status, when it
was resolved, the kernel's reason or message) and the strategy and version it concerned.
A command written by hand into control.json has no ``command.issued``: its result event,
which carries the ``issued_by`` it gave, is its row.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone as dt_timezone
from typing import Any, Iterator

from django.db.models import Case, CharField, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils.dateparse import parse_date, parse_datetime

from .models import AuditEvent, ControlCommand, Slot

__all__ = ["ACTION_ROW_FIELDS", "ActionRow", "OUTCOMES", "action_row", "audit_action_rows", "audit_actions",
           "audit_actions_filter", "format_duration", "operator_actions"]

# Events that only follow an action already in the log (its command.issued): not rows of their own.
FOLLOW_UPS = ("config.changed",)
FOLLOW_UP_PREFIXES = ("version.",)
PEOPLE = ("admin", "api", "cli")
OUTCOMES = ("pending", "applied", "rejected", "expired", "failed")
_UNRESOLVED = (ControlCommand.Status.PENDING, ControlCommand.Status.DELIVERED)


def operator_actions() -> Q:
    """The events that are an operator's action (one per action), as a filter."""
    by_hand = Q(action__startswith="command.", payload__unknown_to_console=True)
    by_people = Q(source__in=PEOPLE) & ~Q(action__in=FOLLOW_UPS)
    for prefix in FOLLOW_UP_PREFIXES:
        by_people &= ~Q(action__startswith=prefix)
    return Q(action__in=("command.issued", "halt.engaged")) | by_hand | by_people


def _command(field: str) -> Subquery:
    return Subquery(ControlCommand.objects.filter(command_id=OuterRef("command_id")).values(field)[:1])


def _command_text(path: str) -> Subquery:
    rows = ControlCommand.objects.filter(command_id=OuterRef("command_id")).annotate(v=KT(path))
    return Subquery(rows.values("v")[:1], output_field=CharField())


def audit_annotate(qs: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
    """Each event with its action's joined fate (``cmd_status``, ``resolved_at``, ``outcome_now``),
    what it did (``act``), its strategy and version, the kernel's reason or message, the token."""
    slot_of = Slot.objects.filter(kernel__name=OuterRef("kernel_name"), slot_id=OuterRef("slot_id"))
    return qs.annotate(
        cmd_status=_command("status"),
        resolved_at=_command("resolved_at"),
        cmd_error=_command("error"),
        act=Case(
            When(action="halt.engaged", then=Value("halt")),
            When(action__startswith="command.", then=Coalesce(KT("payload__action"), F("action"))),
            default=F("action"), output_field=CharField(),
        ),
        strategy_name=Coalesce(
            KT("payload__args__strategy"), KT("payload__strategy"),
            Subquery(slot_of.values("strategy")[:1]), output_field=CharField(),
        ),
        version_ref=Coalesce(
            _command_text("detail__version"), _command_text("detail__strategies__0__version"),
            KT("payload__detail__version"), Cast(Subquery(slot_of.values("strategy_version")[:1]), CharField()),
            output_field=CharField(),
        ),
        message=Coalesce(_command_text("detail__message"), KT("payload__detail__message"),
                         output_field=CharField()),
        token_name=Coalesce(KT("payload__token"), Value(""), output_field=CharField()),  # compared as text
    ).annotate(
        outcome_now=Case(
            When(cmd_status__in=_UNRESOLVED, then=Value("pending")),
            When(cmd_status__isnull=False, then=F("cmd_status")),
            default=F("outcome"), output_field=CharField(),
        ),
    )


def audit_actions(*, every_event: bool = False) -> QuerySet[AuditEvent]:
    """Operator actions (or, with ``every_event``, every event), newest first, annotated."""
    qs = AuditEvent.objects.all() if every_event else AuditEvent.objects.filter(operator_actions())
    return audit_annotate(qs).order_by("-at", "-id")


def _day_bound(value: str | date | datetime | None, *, end: bool) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        # A bare day first: parse_datetime would read "2026-12-07" as its midnight.
        parsed = parse_date(value) if len(value.strip()) == 10 else parse_datetime(value)
        if parsed is None:
            raise ValueError(f"not a date or time: {value!r}")
        value = parsed
    if not isinstance(value, datetime):
        # A day: from its first instant, or up to the last instant of it.
        value = datetime.combine(value, time.max if end else time.min)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt_timezone.utc)


def audit_actions_filter(qs: QuerySet[AuditEvent], *, action: str | None = None, kernel: str | None = None,
                         slot: str | None = None, strategy: str | None = None, actor: str | None = None,
                         outcome: str | None = None, since: Any = None, until: Any = None) -> QuerySet[AuditEvent]:
    """Narrow annotated rows (:func:`audit_actions`); each filter matches exactly, ``actor``
    the actor or the API token's name, ``since``/``until`` a date (whole days, UTC) or a time."""
    if action:
        qs = qs.filter(act=action)
    if kernel:
        qs = qs.filter(kernel_name=kernel)
    if slot:
        qs = qs.filter(slot_id=slot)
    if strategy:
        qs = qs.filter(strategy_name=strategy)
    if actor:
        qs = qs.filter(Q(actor=actor) | Q(token_name=actor) | Q(token_name__startswith=f"{actor} ("))
    if outcome:
        qs = qs.filter(outcome_now=outcome)
    start, end = _day_bound(since, end=False), _day_bound(until, end=True)
    if start is not None:
        qs = qs.filter(at__gte=start)
    if end is not None:
        qs = qs.filter(at__lte=end)
    return qs


@dataclass(frozen=True)
class ActionRow:
    """One operator action as the log shows it."""

    at: datetime
    action: str
    kernel: str
    slot: str
    strategy: str
    version: str
    actor: str
    token: str
    outcome: str
    duration_s: float | None
    reason: str
    command_id: str


ACTION_ROW_FIELDS = tuple(ActionRow.__dataclass_fields__)


def action_row(event: AuditEvent) -> ActionRow:
    """An annotated event as a row: its duration from issue to outcome (None while pending,
    and for a command written by hand, whose issue time the console never saw)."""
    resolved = getattr(event, "resolved_at", None)
    duration = (resolved - event.at).total_seconds() if resolved is not None else None
    error = getattr(event, "cmd_error", "") or (event.payload or {}).get("error") or ""
    message = getattr(event, "message", None) or ""
    return ActionRow(
        at=event.at, action=event.act or event.action, kernel=event.kernel_name, slot=event.slot_id,
        strategy=event.strategy_name or "", version=_text(event.version_ref), actor=event.actor,
        token=event.token_name or "", outcome=event.outcome_now or "",
        duration_s=max(duration, 0.0) if duration is not None else None,
        reason=str(error or message), command_id=event.command_id,
    )


def _text(value: Any) -> str:
    # A JSON number comes back as a number on SQLite and as text on PostgreSQL.
    return "" if value is None else str(value)


def audit_action_rows(qs: QuerySet[AuditEvent]) -> Iterator[ActionRow]:
    for event in qs.iterator(chunk_size=2000):
        yield action_row(event)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    return str(timedelta(seconds=round(seconds)))
