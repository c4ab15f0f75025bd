"""The audit log's filters: one per column of an operator action (action, kernel, slot,
strategy, actor, outcome, a date range), each by the query parameter other pages link with
(``?kernel=<name>``, ``?slot=<id>``), and the switch to every event as recorded."""
from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.utils import timezone

from ..audit_actions import OUTCOMES, audit_actions_filter, operator_actions

EVENTS_PARAM = "events"


def every_event(request) -> bool:
    return request.GET.get(EVENTS_PARAM) == "all"


class EventsFilter(admin.SimpleListFilter):
    title = "show"
    parameter_name = EVENTS_PARAM

    def lookups(self, request, model_admin):
        return [("all", "every event, as recorded")]

    def choices(self, changelist):
        for choice in super().choices(changelist):
            if choice["display"] == "All":
                choice["display"] = "one row per action"
            yield choice

    def queryset(self, request, queryset):
        return queryset if self.value() == "all" else queryset.filter(operator_actions())


class _ColumnFilter(admin.SimpleListFilter):
    """Choices: the values the log holds (at most 50), and the one asked for even if absent,
    so that a link such as ``?slot=btc-5m`` always filters."""

    column = ""

    def lookups(self, request, model_admin):
        qs = model_admin.get_queryset(request).filter(operator_actions()).order_by()
        values = {v for v in qs.values_list(self.column, flat=True).distinct()[:50] if v}
        if self.value():
            values.add(self.value())
        return [(v, v) for v in sorted(values)]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            return audit_actions_filter(queryset, **{self.parameter_name: self.value()})
        except ValueError as exc:
            raise IncorrectLookupParameters(str(exc)) from exc


def _column(name: str, column: str, title: str) -> type[_ColumnFilter]:
    return type(f"{name.title()}Filter", (_ColumnFilter,), {"parameter_name": name, "column": column, "title": title})


class OutcomeFilter(_ColumnFilter):
    parameter_name = "outcome"
    title = "outcome"

    def lookups(self, request, model_admin):
        return [(o, o) for o in OUTCOMES]


class _DayFilter(_ColumnFilter):
    """A bound of the date range: a day (``2026-12-07``, whole days in UTC) or a time."""

    def lookups(self, request, model_admin):
        today = timezone.now().date()
        days = [(today.isoformat(), "today"), ((today - timedelta(days=7)).isoformat(), "a week ago"),
                ((today - timedelta(days=30)).isoformat(), "30 days ago")]
        if self.value() and self.value() not in dict(days):
            days.append((self.value(), self.value()))
        return days


class SinceFilter(_DayFilter):
    parameter_name = "since"
    title = "from (UTC)"


class UntilFilter(_DayFilter):
    parameter_name = "until"
    title = "until (UTC)"


ACTION_FILTERS = (
    _column("action", "act", "action"), _column("kernel", "kernel_name", "kernel"),
    _column("slot", "slot_id", "slot"), _column("strategy", "strategy_name", "strategy"),
    _column("actor", "actor", "actor"), OutcomeFilter, SinceFilter, UntilFilter,
)
