"""trading.services.notifications (events → messages → channels: dedupe, rate limit, backoff,
audit), notification_events (what a new status.json tells), and the stale check's stop /
hang / recovery events. Webhooks and the fake Telegram are real HTTP servers on loopback
(tests/support/notification_sink.py); email goes to Django's locmem outbox."""
from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from foresight_site.notification_settings import notification_settings
from kernel.control import write_status
from kernel.protocol import ReloadStatus
from tests.support.notification_sink import NotificationSink
from tests.support.ports import free_port
from tests.trading.admin_fixtures import slot_status, write_kernel_status
from tests.trading.service_calls import CLI, audit_count
from trading import services
from trading.models import AuditEvent, NotificationDelivery
from trading.services.actors import Actor
from trading.services.notifications import (
    notification_backoff,
    notification_message,
    notifications_after_sync,
    notifications_run,
)

pytestmark = pytest.mark.django_db


def notify(settings, **channels):
    settings.FORESIGHT_NOTIFY = {
        "webhooks": [], "email_to": [], "email_from": "foresight@test", "telegram_token": "", "telegram_chats": [],
        "telegram_api": "", "timeout_s": 5.0, "per_minute": 20, "max_attempts": 8, "retry_s": 2.0,
        "retry_max_s": 300.0, **channels,
    }


def halt_observed(kernel, since="2026-12-01T03:00:00.000Z", reason="risk limit"):
    return services.audit_record(
        action="halt.observed", actor=Actor.for_kernel(kernel.name), kernel=kernel, outcome="halted",
        payload={"since": since, "reason": reason, "cancelled_orders": ["o-1", "o-2"]},
        dedupe_key=f"halt.observed:{kernel.name}:{since}")


def test_the_backoff_doubles_from_the_first_delay_up_to_the_cap():
    delays = [notification_backoff(attempts=n, base_s=2.0, max_s=300.0) for n in range(1, 11)]
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_a_message_names_the_kernel_the_reason_and_what_happened(idle_kernel):
    event = halt_observed(idle_kernel, reason="drawdown 7%")
    text, fields = notification_message(event)
    assert text == ("[foresight critical] Kernel idle is HALTED since 2026-12-01T03:00:00.000Z: drawdown 7%. "
                    "2 resting order(s) cancelled.")
    assert (fields["event"], fields["kernel"], fields["severity"]) == ("halt.observed", "idle", "critical")
    assert fields["detail"]["cancelled_orders"] == ["o-1", "o-2"] and fields["audit_id"] == event.pk


def test_a_webhook_that_fails_three_times_gets_the_event_on_the_fourth_try_exactly_once(idle_kernel, settings):
    with NotificationSink(fail_first=3) as sink:
        notify(settings, webhooks=[f"{sink.url}/hooks/T000/SECRETPATH"])
        halt_observed(idle_kernel)
        at = timezone.now()
        outcomes = [notifications_run(now=at)]
        for wait in (2, 4, 8):  # the schedule: 2 s after the first failure, then 4, then 8
            at += timedelta(seconds=wait)
            tried = len(sink.requests)
            notifications_run(now=at - timedelta(milliseconds=1))
            assert len(sink.requests) == tried  # not due yet: not tried
            outcomes.append(notifications_run(now=at))
        for later in (60, 600, 6000):
            notifications_run(now=at + timedelta(seconds=later))

        assert [(o["sent"], o["failed"]) for o in outcomes] == [(0, 1), (0, 1), (0, 1), (1, 0)]
        assert [r["answered"] for r in sink.requests] == [500, 500, 500, 200]
        assert len(sink.received()) == 1 and sink.requests[0]["path"] == "/hooks/T000/SECRETPATH"
        body = sink.received()[0]
        assert body["text"].startswith("[foresight critical] Kernel idle is HALTED") and body["event"] == "halt.observed"
    assert audit_count("notify.failed") == 3 and audit_count("notify.sent") == 1
    failed = AuditEvent.objects.filter(action="notify.failed").order_by("id")
    assert [e.payload["retry_in_s"] for e in failed] == [2.0, 4.0, 8.0]
    assert all("SECRETPATH" not in str(e.payload) for e in AuditEvent.objects.filter(action__startswith="notify."))
    row = NotificationDelivery.objects.get()
    assert (row.status, row.attempts) == ("sent", 4)


def test_the_same_halt_seen_by_ten_syncs_is_one_message(idle_kernel, settings):
    with NotificationSink() as sink:
        notify(settings, webhooks=[sink.url])
        st = write_kernel_status(Path(idle_kernel.state_dir), halt_reason="fat finger", tick=100)
        for tick in range(10):  # the kernel keeps reporting the same halt
            st.tick = 100 + tick
            write_status(Path(idle_kernel.state_dir) / "status.json", st)
            services.status_sync(kernel=idle_kernel)
            notifications_run()
        assert audit_count("halt.observed") == 1
        texts = sink.texts()
        assert len(texts) == 1 and "HALTED" in texts[0] and "fat finger" in texts[0]


def test_a_channel_sends_at_most_its_rate_per_minute_and_the_rest_later(idle_kernel, settings):
    with NotificationSink() as sink:
        notify(settings, webhooks=[sink.url], per_minute=2)
        for n in range(5):
            halt_observed(idle_kernel, since=f"2026-12-01T03:0{n}:00.000Z")
        now = timezone.now()
        first = notifications_run(now=now)
        assert (first["queued"], first["sent"], first["deferred"]) == (5, 2, 3)
        assert notifications_run(now=now + timedelta(seconds=30))["sent"] == 0
        assert notifications_run(now=now + timedelta(seconds=62))["sent"] == 2
        assert notifications_run(now=now + timedelta(seconds=124))["sent"] == 1
        assert len(sink.received()) == 5
        assert sorted(b["detail"]["since"] for b in sink.received()) == [f"2026-12-01T03:0{n}:00.000Z" for n in range(5)]


def test_the_email_goes_through_djangos_mail_framework(idle_kernel, settings):
    notify(settings, email_to=["ops@example.com", "risk@example.com"])
    halt_observed(idle_kernel, reason="manual")
    assert notifications_run()["sent"] == 1
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com", "risk@example.com"] and message.from_email == "foresight@test"
    assert "halt.observed" in message.subject and "idle" in message.subject
    assert "Kernel idle is HALTED" in message.body and "manual" in message.body


def test_telegram_is_a_post_to_the_bot_api_of_the_configured_base(idle_kernel, settings):
    with NotificationSink() as sink:
        notify(settings, telegram_token="123:SECRETTOKEN", telegram_chats=["-1001", "42"], telegram_api=sink.url)
        halt_observed(idle_kernel)
        assert notifications_run()["sent"] == 2
        assert {r["path"] for r in sink.requests} == {"/bot123:SECRETTOKEN/sendMessage"}
        assert sorted(b["chat_id"] for b in sink.received()) == ["-1001", "42"]
        assert all("Kernel idle is HALTED" in b["text"] for b in sink.received())
    assert all("SECRETTOKEN" not in str(e.payload) for e in AuditEvent.objects.filter(action="notify.sent"))


def test_a_dead_endpoint_never_breaks_the_sync_and_its_failure_is_audited(idle_kernel, settings):
    notify(settings, webhooks=[f"http://127.0.0.1:{free_port()}/secret-hook"], timeout_s=1.0)
    halt_observed(idle_kernel)
    summary = notifications_after_sync()  # no broker here: sent in this process
    assert (summary["sent"], summary["failed"]) == (0, 1)
    failed = AuditEvent.objects.get(action="notify.failed")
    assert failed.payload["error"].endswith(": ConnectionError") and failed.outcome == "retrying"
    assert "secret-hook" not in str(failed.payload)


def test_nothing_is_collected_without_a_channel(idle_kernel, settings):
    notify(settings)
    halt_observed(idle_kernel)
    assert notifications_after_sync() == {"notifications": "none configured"}
    assert NotificationDelivery.objects.count() == 0


# ------------------------------------------------------------------ stop, hang, recovery (item 4)


def test_a_hang_is_stale_once_and_its_end_is_one_recovery(idle_kernel, settings, caplog):
    settings.FORESIGHT_STALE_AFTER_S = 10.0
    settings.FORESIGHT_STALE_LOG_EVERY_S = 300.0
    silent_since = timezone.now() - timedelta(seconds=60)
    write_kernel_status(Path(idle_kernel.state_dir), heartbeat=silent_since, tick=5)
    services.status_sync(kernel=idle_kernel)
    caplog.set_level(logging.ERROR, logger="trading.services")
    for _ in range(5):
        assert services.kernel_stale_check() == [idle_kernel]
    assert audit_count("kernel.stale") == 1
    assert len([r for r in caplog.records if "not reporting" in r.getMessage()]) == 1  # once, not every round

    for tick in (6, 7, 8):
        write_kernel_status(Path(idle_kernel.state_dir), tick=tick)
        services.status_sync(kernel=idle_kernel)
    assert services.kernel_stale_check() == []
    recovered = AuditEvent.objects.filter(action="kernel.recovered")
    assert recovered.count() == 1 and audit_count("kernel.stopped") == 0
    text, _ = notification_message(recovered.get())
    assert "REPORTING AGAIN" in text and "idle" in text


def test_a_clean_stop_is_kernel_stopped_not_stale(idle_kernel, settings):
    settings.FORESIGHT_STALE_AFTER_S = 10.0
    write_kernel_status(Path(idle_kernel.state_dir), tick=5)
    services.status_sync(kernel=idle_kernel)
    write_kernel_status(Path(idle_kernel.state_dir), heartbeat=timezone.now() - timedelta(seconds=60), state="stopped", tick=6)
    services.status_sync(kernel=idle_kernel)
    services.status_sync(kernel=idle_kernel)

    assert services.kernel_stale_check() == []
    assert (audit_count("kernel.stopped"), audit_count("kernel.stale"), audit_count("kernel.recovered")) == (1, 0, 0)
    text, _ = notification_message(AuditEvent.objects.get(action="kernel.stopped"))
    assert "STOPPED cleanly" in text and "NOT REPORTING" not in text


def test_a_new_fault_an_order_in_doubt_and_a_reconciliation_mismatch_are_events(idle_kernel):
    faulted = slot_status("btc-5m", "BTC/USDT")
    faulted.fault = "evaluate raised ZeroDivisionError"
    faulted.last_order = {"client_order_id": "fs-btc-1", "status": "unknown", "side": "buy", "qty": 0.1,
                          "error": "TemporaryError: timed out"}
    st = write_kernel_status(Path(idle_kernel.state_dir), slots=[faulted, slot_status("eth-5m", "ETH/USDT")], tick=3)
    st.ledger.reconciled = {"at": "2026-12-01T02:00:00.000Z", "unknown": 1, "unknown_open_orders": 0,
                            "position_mismatches": [], "errors": [], "summary": "1 UNKNOWN (slot paused)"}
    write_status(Path(idle_kernel.state_dir) / "status.json", st)
    services.status_sync(kernel=idle_kernel)
    for tick in (4, 5):  # later statuses say the same: nothing new
        st.tick = tick
        write_status(Path(idle_kernel.state_dir) / "status.json", st)
        services.status_sync(kernel=idle_kernel)

    assert (audit_count("slot.faulted", slot_id="btc-5m"), audit_count("order.in_doubt"),
            audit_count("reconcile.mismatch")) == (1, 1, 1)
    doubt, _ = notification_message(AuditEvent.objects.get(action="order.in_doubt"))
    assert "fs-btc-1" in doubt and "UNKNOWN outcome" in doubt and "btc-5m" in doubt
    mismatch, _ = notification_message(AuditEvent.objects.get(action="reconcile.mismatch"))
    assert "1 UNKNOWN (slot paused)" in mismatch


def test_with_a_broker_the_sync_round_queues_the_task_and_sends_nothing_itself(idle_kernel, settings):
    with NotificationSink() as sink:
        notify(settings, webhooks=[sink.url])
        settings.CELERY_TASK_ALWAYS_EAGER = False  # as with REDIS_URL: tasks go to the broker (memory:// here)
        halt_observed(idle_kernel)
        assert notifications_after_sync() == {"notifications": "queued"}
        assert sink.requests == [] and NotificationDelivery.objects.count() == 0


def test_a_halt_waits_for_no_notification_and_is_told_afterwards(idle_kernel, settings):
    with NotificationSink() as sink:
        notify(settings, webhooks=[sink.url])
        services.halt_engage(kernel=idle_kernel, actor=CLI, reason="flash crash")
        # The halt path wrote control.json and returned: nothing was sent or even queued on it.
        assert sink.requests == [] and NotificationDelivery.objects.count() == 0
        assert notifications_run()["sent"] == 1
        assert sink.texts() == [f"[foresight critical] HALT requested for kernel idle by {CLI.name}: flash crash."]


@pytest.mark.parametrize("result, words", [
    ("failed", ("Reload of strategy ema_cross FAILED on kernel idle", "SyntaxError in line 3",
                "previous version keeps running")),
    ("auto_rolled_back", ("Canary of strategy ema_cross on kernel idle was ROLLED BACK automatically",
                          "2 faults in 5 cycles")),
])
def test_a_failed_reload_and_an_automatic_canary_rollback_are_told(idle_kernel, result, words):
    error = "SyntaxError in line 3" if result == "failed" else "2 faults in 5 cycles"
    st = write_kernel_status(Path(idle_kernel.state_dir), tick=3)
    st.reloads = [ReloadStatus(at="2026-12-01T02:00:00.000Z", strategy="ema_cross", result=result, error=error)]
    write_status(Path(idle_kernel.state_dir) / "status.json", st)
    services.status_sync(kernel=idle_kernel)
    text, fields = notification_message(AuditEvent.objects.get(action=f"reload.{result}"))
    assert all(w in text for w in words), text
    assert fields["severity"] == "warning"


def test_the_channels_come_from_the_environment():
    got = notification_settings(console_queue="console", beat_schedule={}, task_routes={}, env={
        "FORESIGHT_NOTIFY_WEBHOOK_URLS": "https://hooks.example.com/a, http://127.0.0.1:9/b",
        "FORESIGHT_NOTIFY_EMAIL_TO": "ops@example.com,risk@example.com",
        "FORESIGHT_NOTIFY_TELEGRAM_TOKEN": "1:x", "FORESIGHT_NOTIFY_TELEGRAM_CHAT_IDS": "5",
        "FORESIGHT_NOTIFY_TELEGRAM_API": "http://127.0.0.1:9/", "FORESIGHT_EMAIL_PORT": "587",
    })
    notify_cfg = got["FORESIGHT_NOTIFY"]
    assert notify_cfg["webhooks"] == ["https://hooks.example.com/a", "http://127.0.0.1:9/b"]
    assert notify_cfg["email_to"] == ["ops@example.com", "risk@example.com"]
    assert (notify_cfg["telegram_api"], notify_cfg["telegram_chats"]) == ("http://127.0.0.1:9", ["5"])
    assert got["EMAIL_PORT"] == 587 and got["CELERY_TASK_ROUTES"]["trading.send_notifications"] == {"queue": "console"}
    assert got["CELERY_BEAT_SCHEDULE"]["send-notifications"]["task"] == "trading.send_notifications"
    with pytest.raises(ImproperlyConfigured):
        notification_settings(console_queue="c", beat_schedule={}, task_routes={},
                              env={"FORESIGHT_NOTIFY_TELEGRAM_TOKEN": "1:x"})  # no chat to write to
    with pytest.raises(ImproperlyConfigured):
        notification_settings(console_queue="c", beat_schedule={}, task_routes={},
                              env={"FORESIGHT_NOTIFY_WEBHOOK_URLS": "hooks.example.com/a"})
