"""The console's /metrics (foresight_site/metrics.py, trading/metrics_reads.py): it parses with
prometheus-client's parser; the request counter moves with requests; audit events by kind and
command delivery latency are what the database holds; only loopback clients or the token's
holder may scrape.

Tests marked ``integration`` run a real ``manage.py runkernel`` subprocess."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.urls import resolve
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.trading.service_calls import CLI, issue_committed
from trading import services
from trading.models import AuditEvent, ControlCommand

pytestmark = pytest.mark.django_db


def scrape(client, **extra) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.content.decode()) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_request_counter_moves_with_requests(client):
    view = resolve("/api/health/kernels").view_name  # Django's own name for the view, as the label
    before = scrape(client)
    for _ in range(3):
        client.get("/api/health/kernels")
    client.get("/no-such-page")
    after = scrape(client)
    grew = lambda name, **kw: value(after, name, **kw) - value(before, name, **kw)  # noqa: E731
    status = str(client.get("/api/health/kernels").status_code)  # 200, or 503 with no kernel: either is counted
    assert grew("foresight_console_requests_total", view=view, method="GET", status=status) == 3
    assert grew("foresight_console_requests_total", view="<unresolved>", method="GET", status="404") == 1
    assert grew("foresight_console_request_duration_seconds_count", view=view) == 3
    # The first scrape itself was counted by the time of the second.
    assert grew("foresight_console_requests_total", view="metrics", method="GET", status="200") == 1


def test_audit_events_are_counted_by_kind_from_the_database(client):
    for action in ("metrics.test_a", "metrics.test_a", "metrics.test_b"):
        services.audit_record(action=action, actor=CLI, payload={"n": 1})
    expected = Counter(AuditEvent.objects.values_list("action", flat=True))
    samples = scrape(client)
    assert value(samples, "foresight_console_audit_events_total", action="metrics.test_a") == 2
    assert value(samples, "foresight_console_audit_events_total", action="metrics.test_b") == 1
    for action, n in expected.items():
        assert value(samples, "foresight_console_audit_events_total", action=action) == n


def test_command_delivery_latency_is_a_histogram_of_issue_to_result(client, idle_kernel):
    now = timezone.now()
    for cid, status, seconds in (("c1", "applied", 0.3), ("c2", "applied", 0.04), ("c3", "rejected", 7.0),
                                 ("c4", "pending", None)):
        ControlCommand.objects.create(
            command_id=cid, kernel=idle_kernel, action="slot.pause", actor="tester", source="cli",
            issued_at=now, status=status,
            resolved_at=now + timedelta(seconds=seconds) if seconds is not None else None)
    samples = scrape(client)
    applied = dict(action="slot.pause", result="applied")
    name = "foresight_console_command_delivery_seconds"
    assert value(samples, f"{name}_count", **applied) == 2
    assert value(samples, f"{name}_sum", **applied) == pytest.approx(0.34)
    # By hand: 0.04 s is under every bucket from 0.05 up; 0.3 s from 0.5 up.
    assert value(samples, f"{name}_bucket", le="0.05", **applied) == 1
    assert value(samples, f"{name}_bucket", le="0.25", **applied) == 1
    assert value(samples, f"{name}_bucket", le="0.5", **applied) == 2
    assert value(samples, f"{name}_bucket", le="+Inf", **applied) == 2
    rejected = dict(action="slot.pause", result="rejected")
    assert value(samples, f"{name}_bucket", le="5.0", **rejected) == 0
    assert value(samples, f"{name}_bucket", le="10.0", **rejected) == 1
    assert value(samples, f"{name}_count", action="slot.pause", result="pending") == 0  # not resolved: not counted


def test_kernel_heartbeat_and_halt_come_from_the_mirror(client, idle_kernel):
    beat = timezone.now() - timedelta(seconds=42)
    type(idle_kernel).objects.filter(pk=idle_kernel.pk).update(heartbeat_at=beat, halt_engaged=True)
    samples = scrape(client)
    assert value(samples, "foresight_console_kernel_heartbeat_timestamp_seconds", kernel="idle") == pytest.approx(
        beat.timestamp())
    assert value(samples, "foresight_console_kernel_halted", kernel="idle") == 1.0


@pytest.mark.integration
def test_a_real_command_s_delivery_is_measured_from_the_mirror(client, live_kernel,
                                                                django_capture_on_commit_callbacks):
    cmd = issue_committed(live_kernel, "reload", django_capture_on_commit_callbacks, args={"strategy": "breakout"})
    cmd = services.command_wait(command=cmd, timeout_s=30)
    assert cmd.status == "applied"
    cmd.refresh_from_db()
    samples = scrape(client)
    labels = dict(action="reload", result="applied")
    assert value(samples, "foresight_console_command_delivery_seconds_count", **labels) == 1
    assert value(samples, "foresight_console_command_delivery_seconds_sum", **labels) == pytest.approx(
        (cmd.resolved_at - cmd.issued_at).total_seconds(), abs=1e-6)
    assert value(samples, "foresight_console_audit_events_total", action="command.issued") == 1


@pytest.mark.parametrize("remote", ["203.0.113.7", "10.0.0.5", "::ffff:203.0.113.7"])
def test_other_clients_are_refused_without_the_token(client, settings, remote):
    settings.FORESIGHT_METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR=remote).status_code == 403
    settings.FORESIGHT_METRICS_TOKEN = "scrape-secret-1"
    assert client.get("/metrics", REMOTE_ADDR=remote).status_code == 403
    assert client.get("/metrics", REMOTE_ADDR=remote, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR=remote, HTTP_AUTHORIZATION="Bearer scrape-secret-1").status_code == 200


def test_a_local_proxy_forwarding_for_someone_is_not_a_loopback_client(client, settings):
    settings.FORESIGHT_TRUSTED_PROXIES = []
    # A proxy on this host not declared trusted: whoever it forwards for is not known to be local.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 403
    settings.FORESIGHT_TRUSTED_PROXIES = ["127.0.0.1"]
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200


def test_the_refusal_carries_the_consoles_security_headers(client):
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 403
    assert "default-src 'self'" in response["Content-Security-Policy"]


class _Undo(Exception):
    pass


def test_an_unreadable_database_still_serves_the_request_metrics(client):
    from django.db import connection, transaction

    client.get("/api/health/kernels")
    with pytest.raises(_Undo):
        with transaction.atomic():  # undone below: the table comes back
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE trading_auditevent RENAME TO trading_auditevent_gone")
            samples = scrape(client)
            raise _Undo
    assert value(samples, "foresight_console_database_readable") == 0
    assert not any(name.startswith("foresight_console_audit_events") for name, _ in samples)
    view = resolve("/api/health/kernels").view_name
    assert sum(v for (name, labels), v in samples.items()
               if name == "foresight_console_requests_total" and ("view", view) in labels) >= 1
    assert value(scrape(client), "foresight_console_database_readable") == 1
