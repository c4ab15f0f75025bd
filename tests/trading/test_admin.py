"""The operators' admin: buttons per role, slot configuration through the service, the
read-only command and audit lists, the CSV export, API tokens and the kernel dashboard.

No kernel runs here: a kernel is a state dir whose status.json the test writes (real files,
read by the real status_sync). Commands therefore stay "sent, not confirmed yet"; what the
kernel answers is covered by tests/integration/test_admin_kernel.py and test_browser.py.
"""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone as dt_timezone
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from kernel.control import read_control, write_status
from kernel.protocol import CommandStatus, HaltStatus, PositionStatus, SlotConfig, SlotStatus, Status
from trading import services
from trading.models import ApiToken, AuditEvent, ControlCommand, Kernel, Slot

pytestmark = pytest.mark.django_db

OPERATE = ("start", "stop", "pause", "resume", "reload")


@pytest.fixture(autouse=True)
def no_kernel_to_wait_for(settings):
    # Nothing answers in these tests: a button reports "sent, not confirmed yet" at once.
    settings.FORESIGHT_ADMIN_COMMAND_WAIT_S = 0.0


def iso(dt: datetime) -> str:
    return dt.astimezone(dt_timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def slot_status(slot_id: str, symbol: str, strategy: str = "ema_cross", **config) -> SlotStatus:
    cfg = SlotConfig(id=slot_id, symbol=symbol, timeframe="5m", strategy=strategy, order_notional=500.0,
                     max_notional=2000.0, **config)
    return SlotStatus(id=slot_id, symbol=symbol, timeframe="5m", strategy=strategy, strategy_version=1,
                      strategy_sha256="24fb674884c290f8" + "0" * 48, state="active",
                      position=PositionStatus(qty=0.25, entry_price=64000.0, realized_pnl=12.5),
                      cycles=7, missed_cycles=1, last_price=64100.0, unrealized_pnl=25.0, config=cfg)


def write_kernel_status(state_dir: Path, *, heartbeat: datetime | None = None, state: str = "running",
                        halt_reason: str | None = None, commands: list[CommandStatus] = (),
                        tick: int = 10) -> Status:
    """A status.json as a kernel writes it (same model, same atomic writer)."""
    now = timezone.now()
    status = Status(
        state="halted" if halt_reason else state,
        heartbeat_at=iso(heartbeat or now),
        clock_at=iso(now),
        pid=4242,
        tick=tick,
        halt=HaltStatus(engaged=bool(halt_reason), since=iso(now - timedelta(minutes=3)) if halt_reason else None,
                        reason=halt_reason),
        strategies={"ema_cross": {"version": 1, "sha256": "24fb674884c290f8" + "0" * 48,
                                  "loaded_at": iso(now - timedelta(hours=1)), "previous": None}},
        slots=[slot_status("btc-5m", "BTC/USDT"), slot_status("eth-5m", "ETH/USDT")],
        commands=list(commands),
        ledger={"orders": 4, "open_orders": 0, "fills": 4, "realized_pnl": 12.5, "fees": 1.0,
                "cash": 99000.0, "equity": 100025.0, "unrealized_pnl": 25.0},
    )
    write_status(state_dir / "status.json", status)
    return status


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def kernel(state_dir: Path) -> Kernel:
    write_kernel_status(state_dir)
    return services.kernel_register(name="k1", state_dir=str(state_dir))


@pytest.fixture
def slot(kernel: Kernel) -> Slot:
    return Slot.objects.get(kernel=kernel, slot_id="btc-5m")


@pytest.fixture
def login(client, django_user_model):
    """``login("Operator")``: a staff user in that group (None: no group), logged into ``client``."""
    services.roles_setup()

    def as_role(role: str | None):
        user, created = django_user_model.objects.get_or_create(username=(role or "nobody").lower(),
                                                                defaults={"is_staff": True})
        if created and role:
            user.groups.add(Group.objects.get(name=role))
        client.force_login(user)
        return client

    return as_role


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def kernel_url(name: str, kernel: Kernel, *args) -> str:
    return reverse(f"admin:trading_kernel_{name}", args=[kernel.pk, *args])


def slot_url(slot: Slot, action: str) -> str:
    return reverse("admin:trading_slot_control", args=[slot.pk, action])


# --------------------------------------------------------------------- kernel buttons per role


@pytest.mark.parametrize("role", ["Operator", "Risk"])
@pytest.mark.parametrize("action", OPERATE)
def test_operators_and_risk_may_press_the_kernel_buttons(login, kernel, role, action):
    client = login(role)
    response = client.post(kernel_url("control", kernel, action))
    assert response.status_code == 302
    command = ControlCommand.objects.get(kernel=kernel, action=action)
    assert (command.source, command.actor) == ("admin", role.lower())
    assert AuditEvent.objects.filter(action="command.issued", command_id=command.command_id).exists()
    assert texts(response) == [
        f"{dict(start='Start', stop='Stop', pause='Pause', resume='Resume', reload='Reload strategies')[action]} on k1: "
        f"sent, not confirmed yet (command id {command.command_id})"
    ]


@pytest.mark.parametrize("role", ["Viewer", None])
@pytest.mark.parametrize("action", OPERATE + ("rollback",))
def test_viewers_may_not_press_the_kernel_buttons(login, kernel, role, action):
    response = login(role).post(kernel_url("control", kernel, action), {"strategy": "ema_cross"})
    assert response.status_code == 403
    assert not ControlCommand.objects.exists()
    assert not AuditEvent.objects.filter(action="command.issued").exists()


def test_rollback_is_for_risk_users_only_and_names_its_strategy(login, kernel):
    assert login("Operator").post(kernel_url("control", kernel, "rollback"), {"strategy": "ema_cross"}).status_code == 403
    client = login("Risk")
    response = client.post(kernel_url("control", kernel, "rollback"))
    assert response.status_code == 302
    assert texts(response) == ["Rollback on k1: choose the strategy to roll back"]
    client.post(kernel_url("control", kernel, "rollback"), {"strategy": "ema_cross"})
    assert ControlCommand.objects.get(action="rollback").args == {"strategy": "ema_cross"}


def test_reload_of_one_strategy_and_a_redirect_back_to_where_the_button_was(login, kernel):
    client = login("Operator")
    dashboard = kernel_url("dashboard", kernel) + "?window=1h"
    response = client.post(kernel_url("control", kernel, "reload"), {"strategy": "ema_cross", "next": dashboard})
    assert response["Location"] == dashboard
    assert ControlCommand.objects.get(action="reload").args == {"strategy": "ema_cross"}
    # An open redirect is not followed.
    response = client.post(kernel_url("control", kernel, "pause"), {"next": "https://evil.example/"})
    assert response["Location"] == reverse("admin:trading_kernel_change", args=[kernel.pk])


def test_a_button_is_a_post(login, kernel):
    response = login("Operator").get(kernel_url("control", kernel, "stop"))
    assert response.status_code == 302
    assert not ControlCommand.objects.exists()


def test_an_unknown_action_is_not_found(login, kernel):
    assert login("Risk").post(kernel_url("control", kernel, "explode")).status_code == 404


def test_kernel_page_shows_only_the_buttons_the_user_may_press(login, kernel):
    page = login("Viewer").get(reverse("admin:trading_kernel_change", args=[kernel.pk])).content.decode()
    assert 'id="halt-button"' not in page and 'id="kernel-pause"' not in page and 'id="release-button"' not in page
    page = login("Operator").get(reverse("admin:trading_kernel_change", args=[kernel.pk])).content.decode()
    assert 'id="halt-button"' in page and 'id="kernel-pause"' in page
    assert 'id="release-button"' not in page and 'value="rollback"' not in page
    page = login("Risk").get(reverse("admin:trading_kernel_change", args=[kernel.pk])).content.decode()
    assert 'id="halt-button"' in page and 'id="release-button"' in page and 'value="rollback"' in page
    assert '<option value="ema_cross">ema_cross</option>' in page


# --------------------------------------------------------------------- halt and release


def test_halt_asks_for_confirmation_naming_the_consequence(login, kernel):
    response = login("Operator").get(kernel_url("halt", kernel))
    assert response.status_code == 200
    assert ("stops every strategy and cancels resting orders on k1; "
            "trading stays stopped until a Risk user releases it") in response.content.decode()
    assert not (Path(kernel.state_dir) / "control.json").exists()


def test_halt_confirmed_writes_control_json_and_audits(login, kernel):
    response = login("Operator").post(kernel_url("halt", kernel), {"confirm": "yes", "reason": "runaway orders"})
    assert response.status_code == 302
    read = read_control(Path(kernel.state_dir) / "control.json")
    assert read.halt and read.halt_reason == "runaway orders"
    command = ControlCommand.objects.get(kernel=kernel, action="halt")
    assert command.source == "admin" and command.actor == "operator"
    assert AuditEvent.objects.filter(action="halt.engaged", command_id=command.command_id, actor="operator").exists()
    assert texts(response) == [f"HALT on k1: sent, not confirmed yet (command id {command.command_id})"]


@pytest.mark.parametrize("role", ["Viewer", None])
def test_viewers_may_not_halt(login, kernel, role):
    client = login(role)
    assert client.get(kernel_url("halt", kernel)).status_code == 403
    assert client.post(kernel_url("halt", kernel), {"confirm": "yes"}).status_code == 403
    assert not (Path(kernel.state_dir) / "control.json").exists()


def test_release_is_for_risk_users_and_refused_when_not_halted(login, kernel):
    assert login("Operator").post(kernel_url("release", kernel)).status_code == 403
    response = login("Risk").post(kernel_url("release", kernel))
    assert response.status_code == 302
    assert texts(response) == ["Release halt on k1: kernel k1 is not halted (its last status says running)"]
    assert not ControlCommand.objects.filter(action="release").exists()


def test_release_of_a_halted_kernel_is_issued(login, kernel):
    write_kernel_status(Path(kernel.state_dir), halt_reason="manual stop", tick=11)
    services.status_sync(kernel=kernel)
    response = login("Risk").post(kernel_url("release", kernel))
    command = ControlCommand.objects.get(action="release")
    assert command.actor == "risk" and command.source == "admin"
    assert texts(response) == [f"Release halt on k1: sent, not confirmed yet (command id {command.command_id})"]


# --------------------------------------------------------------------- slot buttons


def test_slot_pause_issues_slot_pause_from_the_admin_and_audits_it(login, slot, django_capture_on_commit_callbacks):
    client = login("Operator")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(slot_url(slot, "slot.pause"))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:trading_slot_change", args=[slot.pk])
    command = ControlCommand.objects.get(action="slot.pause")
    assert (command.kernel, command.slot_id, command.source, command.actor) == (slot.kernel, "btc-5m", "admin", "operator")
    event = AuditEvent.objects.get(action="command.issued", command_id=command.command_id)
    assert (event.actor, event.source, event.kernel_name, event.slot_id) == ("operator", "admin", "k1", "btc-5m")
    assert texts(response) == [f"Pause on k1/btc-5m: sent, not confirmed yet (command id {command.command_id})"]
    # Delivered (after the commit) into the kernel's control.json.
    sent = read_control(Path(slot.kernel.state_dir) / "control.json").commands
    assert [(c.id, c.action, c.slot) for c in sent] == [(command.command_id, "slot.pause", "btc-5m")]


@pytest.mark.parametrize("action", ["slot.pause", "slot.resume", "slot.flatten"])
def test_viewers_may_not_press_slot_buttons(login, slot, action):
    response = login("Viewer").post(slot_url(slot, action), {"confirm": "yes"})
    assert response.status_code == 403
    assert not ControlCommand.objects.exists()


def test_flatten_asks_for_confirmation_then_issues(login, slot):
    client = login("Operator")
    page = client.get(slot_url(slot, "slot.flatten"))
    assert page.status_code == 200
    assert "sells the whole position of k1/btc-5m at market" in page.content.decode()
    assert client.post(slot_url(slot, "slot.flatten")).status_code == 200  # unconfirmed: still asks
    assert not ControlCommand.objects.exists()
    client.post(slot_url(slot, "slot.flatten"), {"confirm": "yes"})
    assert ControlCommand.objects.get().action == "slot.flatten"


def test_slot_page_buttons_per_role(login, slot):
    change = reverse("admin:trading_slot_change", args=[slot.pk])
    page = login("Viewer").get(change).content.decode()
    assert 'id="slot-pause"' not in page and 'id="slot-flatten"' not in page
    assert 'name="_save"' not in page  # read-only
    page = login("Operator").get(change).content.decode()
    assert 'id="slot-pause"' in page and 'id="slot-resume"' in page and 'id="slot-flatten"' in page
    assert 'name="_save"' not in page  # operators do not configure slots


def test_changelist_actions_pause_selected_slots(login, kernel):
    client = login("Operator")
    slots = list(Slot.objects.filter(kernel=kernel))
    response = client.post(reverse("admin:trading_slot_changelist"),
                           {"action": "pause_slots", "_selected_action": [s.pk for s in slots]})
    assert response.status_code == 302
    assert sorted(ControlCommand.objects.filter(action="slot.pause").values_list("slot_id", flat=True)) == [
        "btc-5m", "eth-5m"]
    assert len([t for t in texts(response) if "sent, not confirmed yet" in t]) == 2


def test_changelist_flatten_needs_a_confirmation(login, kernel):
    client = login("Operator")
    pks = list(Slot.objects.filter(kernel=kernel).values_list("pk", flat=True))
    url = reverse("admin:trading_slot_changelist")
    page = client.post(url, {"action": "flatten_slots", "_selected_action": pks})
    assert page.status_code == 200 and "sells the whole position of each slot below at market" in page.content.decode()
    assert not ControlCommand.objects.exists()
    client.post(url, {"action": "flatten_slots", "_selected_action": pks, "confirm": "yes"})
    assert ControlCommand.objects.filter(action="slot.flatten").count() == 2


def test_viewers_get_no_slot_actions(login, kernel):
    response = login("Viewer").get(reverse("admin:trading_slot_changelist"))
    assert response.status_code == 200
    assert "pause_slots" not in response.content.decode()
    response = login("Viewer").post(reverse("admin:trading_slot_changelist"), {
        "action": "pause_slots", "_selected_action": list(Slot.objects.values_list("pk", flat=True))})
    assert not ControlCommand.objects.exists()


# --------------------------------------------------------------------- slot configuration


def slot_form(slot: Slot, **changes) -> dict:
    data = {f: getattr(slot, f) for f in Slot.CONFIG_FIELDS}
    data["params"] = json.dumps(data["params"])
    data["max_position"] = "" if data["max_position"] is None else data["max_position"]
    data.update(changes)
    if not data["enabled"]:
        data.pop("enabled")
    return data


def test_risk_users_configure_a_slot_through_slot_configure(login, slot):
    client = login("Risk")
    change = reverse("admin:trading_slot_change", args=[slot.pk])
    response = client.post(change, slot_form(slot, order_notional="250", params='{"fast": 9, "slow": 21}'))
    assert response.status_code == 302, response.content.decode()[:2000]
    slot.refresh_from_db()
    assert (slot.order_notional, slot.params) == (250.0, {"fast": 9, "slow": 21})
    command = ControlCommand.objects.get(action="slot.configure")
    assert command.args["order_notional"] == 250.0 and command.source == "admin"
    event = AuditEvent.objects.get(action="config.changed")
    assert event.payload["changed"] == ["order_notional", "params"] and event.actor == "risk"
    assert any(f"sent, not confirmed yet (command id {command.command_id})" in t for t in texts(response))
    # The kernel still runs the old configuration: the page says where they differ.
    page = client.get(change).content.decode()
    assert 'id="drift-banner"' in page and "order_notional" in page


def test_a_configuration_the_service_refuses_is_shown_on_the_form(login, slot):
    client = login("Risk")
    change = reverse("admin:trading_slot_change", args=[slot.pk])
    response = client.post(change, slot_form(slot, symbol="btc", params='{"fast": 1}'))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "BASE/QUOTE" in " ".join(errors["symbol"])
    assert not ControlCommand.objects.exists()
    slot.refresh_from_db()
    assert slot.symbol == "BTC/USDT"
    # A strategy's params are checked too (ema_cross: fast >= 2).
    response = client.post(change, slot_form(slot, params='{"fast": 1}'))
    assert response.status_code == 200
    assert "params.fast" in " ".join(response.context["adminform"].form.errors["params"])
    assert not AuditEvent.objects.filter(action="config.changed").exists()


def test_operators_may_not_configure_slots(login, slot):
    change = reverse("admin:trading_slot_change", args=[slot.pk])
    response = login("Operator").post(change, slot_form(slot, order_notional="1"))
    assert response.status_code == 403
    slot.refresh_from_db()
    assert slot.order_notional == 500.0


def test_slots_are_neither_added_nor_deleted_in_the_admin(admin_client, slot):
    assert admin_client.get(reverse("admin:trading_slot_add")).status_code == 403
    assert admin_client.post(reverse("admin:trading_slot_delete", args=[slot.pk]), {"post": "yes"}).status_code == 403
    assert Slot.objects.filter(pk=slot.pk).exists()


# --------------------------------------------------------------------- command and audit lists


def test_commands_are_read_only(admin_client, login, slot):
    login("Operator").post(slot_url(slot, "slot.pause"))
    command = ControlCommand.objects.get()
    listing = admin_client.get(reverse("admin:trading_controlcommand_changelist") + "?status=pending&q=btc-5m")
    assert command.command_id in listing.content.decode()
    assert admin_client.get(reverse("admin:trading_controlcommand_add")).status_code == 403
    change = reverse("admin:trading_controlcommand_change", args=[command.pk])
    assert admin_client.post(change, {"status": "applied"}).status_code == 403
    assert admin_client.post(reverse("admin:trading_controlcommand_delete", args=[command.pk]),
                             {"post": "yes"}).status_code == 403
    command.refresh_from_db()
    assert command.status == "pending"


def record(action: str, actor: str = "alice", **kw) -> AuditEvent:
    return services.audit_record(action=action, actor=services.Actor(name=actor, source="admin"), **kw)


def test_audit_events_cannot_be_changed_or_deleted_even_by_a_superuser(admin_client):
    event = record("halt.engaged", kernel_name="k1", outcome="written", payload={"reason": "x"})
    change = reverse("admin:trading_auditevent_change", args=[event.pk])
    page = admin_client.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(change, {"actor": "mallory", "outcome": "ok"}).status_code == 403
    delete = reverse("admin:trading_auditevent_delete", args=[event.pk])
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert admin_client.get(reverse("admin:trading_auditevent_add")).status_code == 403
    listing = admin_client.get(reverse("admin:trading_auditevent_changelist"))
    assert "delete_selected" not in listing.content.decode()
    admin_client.post(reverse("admin:trading_auditevent_changelist"),
                      {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"})
    event.refresh_from_db()
    assert (event.actor, event.outcome) == ("alice", "written")


def read_csv(response) -> list[dict]:
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_export_csv_of_the_filtered_changelist(login):
    record("command.issued", kernel_name="k1", slot_id="btc-5m", command_id="c-1", outcome="issued",
           payload={"action": "slot.pause"})
    record("command.applied", actor="operator", kernel_name="k1", slot_id="btc-5m", command_id="c-1",
           outcome="applied")
    record("login.failed", actor="=HYPERLINK(\"http://evil\")", outcome="failed")
    client = login("Viewer")
    listing = client.get(reverse("admin:trading_auditevent_changelist") + "?kernel_name=k1")
    assert 'id="export-csv"' in listing.content.decode()
    rows = read_csv(client.get(reverse("admin:trading_auditevent_export") + "?kernel_name=k1"))
    assert [(r["action"], r["command_id"], r["outcome"]) for r in rows] == [
        ("command.applied", "c-1", "applied"), ("command.issued", "c-1", "issued")]
    assert json.loads(rows[1]["payload"]) == {"action": "slot.pause"}
    assert set(rows[0]) >= {"at", "actor", "source", "ip", "action", "kernel_name", "slot_id", "command_id"}
    rows = read_csv(client.get(reverse("admin:trading_auditevent_export") + "?q=operator"))
    assert [r["action"] for r in rows] == ["command.applied"]
    # A cell a spreadsheet would run as a formula is defused.
    rows = read_csv(client.get(reverse("admin:trading_auditevent_export") + "?action=login.failed"))
    assert rows[0]["actor"] == "'=HYPERLINK(\"http://evil\")"


def test_export_csv_action_on_selected_events(admin_client):
    a = record("halt.engaged", kernel_name="k1")
    record("halt.observed", kernel_name="k1")
    response = admin_client.post(reverse("admin:trading_auditevent_changelist"),
                                 {"action": "export_csv", "_selected_action": [a.pk]})
    assert [r["action"] for r in read_csv(response)] == ["halt.engaged"]


def test_viewers_see_everything_and_change_nothing(login, slot):
    client = login("Viewer")
    for model in ("kernel", "slot", "controlcommand", "auditevent"):
        assert client.get(reverse(f"admin:trading_{model}_changelist")).status_code == 200, model
    page = client.get(reverse("admin:trading_kernel_change", args=[slot.kernel.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.get(kernel_url("dashboard", slot.kernel)).status_code == 200
    assert client.post(reverse("admin:trading_slot_change", args=[slot.pk]), slot_form(slot)).status_code == 403


# --------------------------------------------------------------------- API tokens


@pytest.mark.parametrize("role", ["Viewer", "Risk"])
def test_a_user_creates_a_token_for_themself_and_sees_it_once(login, django_user_model, role):
    client = login(role)
    user = django_user_model.objects.get(username=role.lower())
    response = client.post(reverse("admin:trading_apitoken_add"), {"name": "laptop cli"}, follow=True)
    assert response.redirect_chain == [(reverse("admin:trading_apitoken_changelist"), 302)]
    token = ApiToken.objects.get()
    assert token.user == user and token.name == "laptop cli"
    [raw] = re.findall(r"<code>(fst_[^<]+)</code>", response.content.decode())
    assert services.token_authenticate(raw) == user
    listing = client.get(reverse("admin:trading_apitoken_changelist")).content.decode()
    assert "laptop cli" in listing
    assert token.token_hash not in listing and raw not in listing  # shown once, the hash never
    detail = client.get(reverse("admin:trading_apitoken_change", args=[token.pk])).content.decode()
    assert token.token_hash not in detail
    client.post(reverse("admin:trading_apitoken_changelist"), {"action": "revoke_tokens", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None and services.token_authenticate(raw) is None


def test_a_superuser_creates_and_revokes_a_token(admin_client, admin_user):
    response = admin_client.post(reverse("admin:trading_apitoken_add"), {"name": "grafana"})
    token = ApiToken.objects.get()
    assert token.user == admin_user
    assert "not shown again" in texts(response)[0]
    assert AuditEvent.objects.filter(action="token.created").exists()
    admin_client.post(reverse("admin:trading_apitoken_changelist"),
                      {"action": "revoke_tokens", "_selected_action": [token.pk]})
    assert AuditEvent.objects.filter(action="token.revoked").exists()


def test_users_see_only_their_own_tokens_and_revoke_only_their_own(login, admin_user):
    theirs, _ = services.token_create(user=admin_user, name="admin's")
    client = login(None)  # staff, no group: no view_apitoken
    assert "admin&#x27;s" not in client.get(reverse("admin:trading_apitoken_changelist")).content.decode()
    assert client.get(reverse("admin:trading_apitoken_change", args=[theirs.pk])).status_code in (302, 403)
    client.post(reverse("admin:trading_apitoken_changelist"),
                {"action": "revoke_tokens", "_selected_action": [theirs.pk]})
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


# --------------------------------------------------------------------- the dashboard


def test_dashboard_shows_a_halted_kernel_with_a_stale_heartbeat_loudly(login, kernel):
    write_kernel_status(Path(kernel.state_dir), heartbeat=timezone.now() - timedelta(seconds=45),
                        halt_reason="exchange is misbehaving", tick=12)
    response = login("Viewer").get(kernel_url("dashboard", kernel))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="halt-banner"' in page and "exchange is misbehaving" in page
    assert 'id="stale-banner"' in page and "KERNEL NOT REPORTING" in page
    assert "45 s ago" in page
    assert "<svg" in page or "Not enough equity samples" in page


def test_dashboard_of_a_healthy_kernel(login, kernel):
    write_kernel_status(Path(kernel.state_dir), tick=13,
                        commands=[CommandStatus(id="x1", action="pause", result="rejected",
                                                error="some reason", at=iso(timezone.now()))])
    response = login("Operator").get(kernel_url("dashboard", kernel) + "?window=1h")
    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="halt-banner"' not in page and 'id="stale-banner"' not in page
    assert 'id="slot-btc-5m"' in page and 'id="slot-eth-5m"' in page
    assert "v1 <code>24fb6748</code>" in page
    assert 'id="halt-button"' in page and "<strong>1h</strong>" in page
    assert "dashboard-live" in page  # and the script that refreshes it


def test_dashboard_fragment_is_the_live_part_only(login, kernel):
    client = login("Viewer")
    response = client.get(kernel_url("dashboard", kernel) + "?fragment=1&window=bogus")
    page = response.content.decode()
    assert response.status_code == 200 and "<html" not in page
    assert 'id="slots-table"' in page and "Over the last 24h" in page


def test_dashboard_draws_the_equity_chart(login, kernel):
    from trading.models import EquitySample

    now = timezone.now()
    for i, equity in enumerate([100_000.0, 100_050.0, 99_980.0, 100_120.0]):
        EquitySample.objects.create(kernel=kernel, at=now - timedelta(minutes=30 - i), equity=equity)
    page = login("Viewer").get(kernel_url("dashboard", kernel) + "?window=1h").content.decode()
    assert '<svg class="equity-chart"' in page and "<polyline" in page
    assert "100,120.00" in page  # the top of the scale


def test_dashboard_needs_view_permission(login, kernel):
    assert login(None).get(kernel_url("dashboard", kernel)).status_code == 403


# --------------------------------------------------------------------- registering a kernel


def test_a_superuser_registers_a_kernel_through_kernel_register(admin_client, tmp_path):
    folder = tmp_path / "k2"
    folder.mkdir()
    add = reverse("admin:trading_kernel_add")
    response = admin_client.post(add, {"name": "k2", "state_dir": str(folder), "host": "", "queue": ""})
    assert response.status_code == 302
    kernel = Kernel.objects.get(name="k2")
    assert AuditEvent.objects.filter(action="kernel.registered", kernel_name="k2").exists()
    # The same state dir under a second name is refused, and the form says why.
    response = admin_client.post(add, {"name": "k3", "state_dir": str(folder), "host": "", "queue": ""})
    assert response.status_code == 200
    assert "already registered as kernel 'k2'" in " ".join(response.context["adminform"].form.non_field_errors())
    assert list(Kernel.objects.values_list("name", flat=True)) == ["k2"]
    assert admin_client.post(reverse("admin:trading_kernel_delete", args=[kernel.pk]),
                             {"post": "yes"}).status_code == 403


def test_operators_register_no_kernels(login, tmp_path):
    response = login("Operator").post(reverse("admin:trading_kernel_add"),
                                      {"name": "k9", "state_dir": str(tmp_path), "host": "", "queue": ""})
    assert response.status_code == 403
    assert not Kernel.objects.exists()
