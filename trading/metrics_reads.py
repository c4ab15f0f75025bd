"""What the console's /metrics reads from its database at scrape time (reads only).

The audit log and the command rows are written by whichever process did the work (the web
server, a Celery worker, the ``syncstatus`` loop); counting them in the database rather
than in one process's memory gives the same totals whichever worker is scraped, and they
survive restarts. The audit log is append-only, so its counts only grow: Prometheus
counters. A command's delivery latency is its row's ``issued_at`` → ``resolved_at`` (the
kernel's own time of applying it, as the status mirror records it).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterable

from django.db import DatabaseError
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .models import AuditEvent, ControlCommand, Kernel

__all__ = ["ConsoleDatabaseMetrics", "DELIVERY_BUCKETS"]

PREFIX = "foresight_console"
# Seconds. Delivery is a file append and the kernel's next tick: well under a second when
# healthy; the upper buckets are a kernel that was down or a queue that was stuck.
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
RESOLVED = (ControlCommand.Status.APPLIED, ControlCommand.Status.REJECTED, ControlCommand.Status.FAILED)


def audit_event_counts() -> dict[str, int]:
    """Audit events by action (their kind), all time."""
    return dict(AuditEvent.objects.order_by().values_list("action").annotate(n=Count("id")))


def command_delivery_histogram() -> dict[tuple[str, str], dict[str, Any]]:
    """Per (action, result) of resolved commands: cumulative counts at each bucket, and the
    total latency, in one grouped query."""
    latency = ExpressionWrapper(F("resolved_at") - F("issued_at"), output_field=DurationField())
    buckets = {f"le_{i}": Count("id", filter=Q(latency__lte=timedelta(seconds=b)))
               for i, b in enumerate(DELIVERY_BUCKETS)}
    rows = (ControlCommand.objects.filter(status__in=RESOLVED, resolved_at__isnull=False)
            .annotate(latency=latency).order_by().values("action", "status")
            .annotate(n=Count("id"), total=Sum("latency"), **buckets))
    return {(row["action"], row["status"]): {
        "count": row["n"], "sum": row["total"].total_seconds() if row["total"] is not None else 0.0,
        "buckets": [row[f"le_{i}"] for i in range(len(DELIVERY_BUCKETS))]} for row in rows}


class ConsoleDatabaseMetrics(Collector):
    """A prometheus-client collector over the console's database (registered by
    foresight_site/metrics.py)."""

    def describe(self) -> Iterable[Any]:
        return []  # read at scrape time: nothing to check at registration

    def collect(self) -> Iterable[Any]:
        try:
            counts, delivery_rows = audit_event_counts(), command_delivery_histogram()
            kernels = list(Kernel.objects.order_by("name").values_list("name", "heartbeat_at", "halt_engaged"))
        except DatabaseError:
            # The database is down: the request metrics are still served, and this says why the rest is not.
            yield GaugeMetricFamily(f"{PREFIX}_database_readable", "1 when /metrics could read the database",
                                    value=0)
            return
        yield GaugeMetricFamily(f"{PREFIX}_database_readable", "1 when /metrics could read the database", value=1)
        audit = CounterMetricFamily(f"{PREFIX}_audit_events", "Audit events recorded, by action (kind)",
                                    labels=["action"])
        for action, n in sorted(counts.items()):
            audit.add_metric([action], n)
        yield audit
        delivery = HistogramMetricFamily(
            f"{PREFIX}_command_delivery_seconds",
            "A command's issue (console) to its result (kernel), by action and result",
            labels=["action", "result"])
        for (action, result), h in sorted(delivery_rows.items()):
            buckets = [(str(b), n) for b, n in zip(DELIVERY_BUCKETS, h["buckets"])] + [("+Inf", h["count"])]
            delivery.add_metric([action, result], buckets, h["sum"])
        yield delivery
        heartbeat = GaugeMetricFamily(f"{PREFIX}_kernel_heartbeat_timestamp_seconds",
                                      "The mirrored status.json's heartbeat of each kernel (unix time)",
                                      labels=["kernel"])
        halted = GaugeMetricFamily(f"{PREFIX}_kernel_halted", "1 when the kernel's mirrored status says halted",
                                   labels=["kernel"])
        for name, beat, engaged in kernels:
            if beat is not None:
                heartbeat.add_metric([name], beat.timestamp())
            halted.add_metric([name], 1.0 if engaged else 0.0)
        yield heartbeat
        yield halted
