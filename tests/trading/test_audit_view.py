"""The audit log read as operator actions (issue 14, item 6): one row per action with its
outcome joined and how long it took, the hand-written ``issued_by`` kept, the API token's
name recorded, a filter per column, the CSV of the filtered rows.

Tests marked ``integration`` run a real ``manage.py runkernel`` subprocess."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kernel.control import append_commands
from kernel.protocol import Command
from tests.support.waiting import wait_until
from tests.trading.service_calls import CLI, audit_count, issue_committed
from trading import services
from trading.audit_actions import action_row, audit_actions, audit_actions_filter
from trading.models import AuditEvent, ControlCommand, Slot

pytestmark = pytest.mark.django_db


def _rows(**filters):
    return [action_row(e) for e in audit_actions_filter(audit_actions(), **filters)]


def _csv(response) -> list[dict]:
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.integration
def test_one_row_per_action_with_its_outcome_actor_token_and_filters(live_kernel, django_capture_on_commit_callbacks):
    olga = User.objects.create_user("olga", password="a-long-password-1")
    olga.groups.add(Group.objects.get(name="Operator"))
    token, raw = services.token_create(user=olga, name="night-script")
    bearer = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    with django_capture_on_commit_callbacks(execute=True):
        response = bearer.post("/api/kernels/demo/slots/eth-5m/pause", content_type="application/json")
    assert response.status_code == 202, response.content
    pause = ControlCommand.objects.get(command_id=response.json()["command_id"])
    reload = issue_committed(live_kernel, "reload", django_capture_on_commit_callbacks, args={"strategy": "breakout"})
    append_commands(Path(live_kernel.state_dir), [Command(id="by-hand-7", action="slot.pause", slot="sol-5m",
                                                          issued_by="alice (by hand)")])
    assert services.command_wait(command=pause, timeout_s=30).status == "applied"
    assert services.command_wait(command=reload, timeout_s=30).status == "applied"

    def hand_written_audited() -> bool:
        services.status_sync(kernel=live_kernel)
        return audit_count("command.applied", command_id="by-hand-7") == 1

    wait_until(hand_written_audited, timeout=30, what="the hand-written command's result", poll=0.1)
    pause.refresh_from_db()

    # Several append-only events per action, one row each in the log.
    assert AuditEvent.objects.filter(command_id=pause.command_id).count() >= 2
    rows = _rows(kernel="demo")
    assert sorted(r.command_id for r in rows) == sorted([pause.command_id, reload.command_id, "by-hand-7"])
    by_id = {r.command_id: r for r in rows}

    p = by_id[pause.command_id]
    assert (p.action, p.kernel, p.slot, p.outcome) == ("slot.pause", "demo", "eth-5m", "applied")
    assert (p.actor, p.token) == ("olga", f"night-script ({token.prefix}…)")
    issued = AuditEvent.objects.get(action="command.issued", command_id=pause.command_id)
    assert p.duration_s == pytest.approx((pause.resolved_at - issued.at).total_seconds())
    assert p.duration_s > 0
    assert p.strategy == Slot.objects.get(kernel=live_kernel, slot_id="eth-5m").strategy

    r = by_id[reload.command_id]
    assert (r.action, r.strategy, r.outcome, r.actor) == ("reload", "breakout", "applied", CLI.name)
    assert r.version.isdigit() and "breakout:" in r.reason  # the kernel's message: unchanged, still vN (sha)

    h = by_id["by-hand-7"]
    assert (h.action, h.slot, h.actor, h.outcome, h.duration_s) == ("slot.pause", "sol-5m", "alice (by hand)",
                                                                    "applied", None)

    # A filter per column.
    assert {x.command_id for x in _rows(action="slot.pause")} == {pause.command_id, "by-hand-7"}
    assert [x.command_id for x in _rows(slot="eth-5m")] == [pause.command_id]
    assert [x.command_id for x in _rows(actor="alice (by hand)")] == ["by-hand-7"]
    assert [x.command_id for x in _rows(actor="night-script")] == [pause.command_id]
    assert [x.command_id for x in _rows(actor="olga")] == [pause.command_id]
    assert len(_rows(outcome="applied")) == 3 and _rows(outcome="rejected") == []
    breakout_slots = set(Slot.objects.filter(kernel=live_kernel, strategy="breakout").values_list("slot_id", flat=True))
    expected = {reload.command_id} | {cid for cid, s in ((pause.command_id, "eth-5m"), ("by-hand-7", "sol-5m"))
                                      if s in breakout_slots}
    assert {x.command_id for x in _rows(strategy="breakout")} == expected
    assert _rows(kernel="other") == []
    today = timezone.now().date()
    assert len(_rows(since=today.isoformat())) == 3 and len(_rows(until=today.isoformat())) == 3
    assert _rows(since=(today + timedelta(days=1)).isoformat()) == []
    assert _rows(until=(today - timedelta(days=1)).isoformat()) == []

    # The admin: the changelist takes ?kernel= and ?slot= (the slot and kernel pages link so).
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", password="a-long-password-1"))
    page = admin.get(reverse("admin:trading_auditevent_changelist") + "?slot=eth-5m")
    assert page.status_code == 200
    assert page.context["cl"].result_count == 1
    assert "slot.pause" in page.content.decode() and "night-script" in page.content.decode()
    page = admin.get(reverse("admin:trading_auditevent_changelist") + "?kernel=demo&outcome=applied")
    assert page.context["cl"].result_count == 3
    exported = _csv(admin.get(reverse("admin:trading_auditevent_export") + "?kernel=demo&action=slot.pause"))
    assert sorted((e["command_id"], e["actor"], e["outcome"], e["slot"]) for e in exported) == sorted([
        (pause.command_id, "olga", "applied", "eth-5m"), ("by-hand-7", "alice (by hand)", "applied", "sol-5m")])
    (row,) = [e for e in exported if e["command_id"] == pause.command_id]
    assert row["token"] == f"night-script ({token.prefix}…)" and float(row["duration_s"]) == pytest.approx(p.duration_s)
    assert row["at"] == issued.at.isoformat()


def test_a_rejected_command_shows_the_kernels_reason_and_a_waiting_one_is_pending(idle_kernel,
                                                                                 django_capture_on_commit_callbacks):
    waiting = issue_committed(idle_kernel, "slot.pause", django_capture_on_commit_callbacks, slot_id="btc-5m")
    refused = issue_committed(idle_kernel, "reload", django_capture_on_commit_callbacks, args={"strategy": "nope"})
    issued_at = AuditEvent.objects.get(action="command.issued", command_id=refused.command_id).at
    # As the status sync records the kernel's answer (services/status_mirror.py).
    ControlCommand.objects.filter(pk=refused.pk).update(status="rejected", resolved_at=issued_at + timedelta(seconds=1.5),
                                                        error="no strategy 'nope' in strategies/")
    rows = {r.command_id: r for r in _rows(kernel="idle")}
    assert rows[waiting.command_id].outcome == "pending" and rows[waiting.command_id].duration_s is None
    r = rows[refused.command_id]
    assert (r.outcome, r.reason, r.duration_s) == ("rejected", "no strategy 'nope' in strategies/", 1.5)
    assert [x.command_id for x in _rows(outcome="pending")] == [waiting.command_id]
    assert [x.command_id for x in _rows(outcome="rejected")] == [refused.command_id]
    # A halt is an action too, and a configuration change is not a second row of its slot.configure.
    services.halt_engage(kernel=idle_kernel, actor=CLI, reason="test")
    assert [x.action for x in _rows(kernel="idle", action="halt")] == ["halt"]


def test_the_admin_filters_by_date_range_refuses_a_bad_date_and_shows_every_event_on_request(
        idle_kernel, django_capture_on_commit_callbacks):
    pause = issue_committed(idle_kernel, "slot.pause", django_capture_on_commit_callbacks, slot_id="btc-5m")
    services.audit_record(action="command.applied", actor=services.Actor.for_kernel("idle"), kernel=idle_kernel,
                          slot_id="btc-5m", command_id=pause.command_id, outcome="applied")
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", password="a-long-password-1"))
    changelist = reverse("admin:trading_auditevent_changelist")
    today = timezone.now().date()
    page = admin.get(changelist, {"since": today.isoformat(), "until": today.isoformat()})
    assert page.status_code == 200 and page.context["cl"].result_count == 1
    assert 'id="audit-date-range"' in page.content.decode()
    page = admin.get(changelist, {"until": (today - timedelta(days=1)).isoformat()})
    assert page.context["cl"].result_count == 0
    bad = admin.get(changelist, {"since": "2026-13-45"})
    assert bad.status_code == 302 and bad["Location"].endswith("?e=1")
    # Every event as recorded: the issue and the kernel's answer, two rows.
    page = admin.get(changelist, {"events": "all", "kernel_name": "idle"})
    assert page.context["cl"].result_count == 2
    # The selected rows' CSV is the rows as shown: one per action.
    (event,) = audit_actions_filter(audit_actions(), kernel="idle")
    response = admin.post(changelist, {"action": "export_csv", "_selected_action": [event.pk]})
    rows = _csv(response)
    assert [(r["action"], r["slot"], r["command_id"]) for r in rows] == [("slot.pause", "btc-5m", pause.command_id)]
