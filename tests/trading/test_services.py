"""trading.services: commands and their life, halt and release, slot configuration, the
status mirror, exactly-once audit, the spool, tokens, roles, and the append-only log.

Tests marked ``integration`` run a real ``manage.py runkernel`` subprocess on a temp
state dir (the demo deployment at 600× speed) and steer it only through the services.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from kernel.control import append_commands
from kernel.protocol import Command
from trading import selectors, services
from trading.models import ApiToken, AuditEvent, ControlCommand, EquitySample, Fill, Kernel, Slot

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]
CLI = services.Actor(name="tester@host", source="cli")


# ===================================================================== fixtures


@pytest.fixture
def spool(tmp_path, settings) -> Path:
    settings.FORESIGHT_AUDIT_SPOOL = str(tmp_path / "audit-spool.jsonl")
    return tmp_path / "audit-spool.jsonl"


@pytest.fixture
def runkernel(tmp_path):
    """Start ``manage.py runkernel --demo --speed 600`` on a fresh state dir; killed at teardown."""
    procs: list[subprocess.Popen] = []

    def start(name: str = "state") -> Path:
        state_dir = tmp_path / name
        state_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'unused-by-the-kernel.sqlite3'}"
        log = open(tmp_path / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runkernel", "--state-dir", str(state_dir), "--demo", "--speed", "600"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        deadline = time.monotonic() + 60
        while True:
            try:
                st = json.loads((state_dir / "status.json").read_text())
                if st.get("pid") == proc.pid and st.get("tick", 0) >= 1:
                    return state_dir
            except (FileNotFoundError, ValueError):
                pass
            assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()
            assert time.monotonic() < deadline, "the kernel wrote no status.json within 60 s"
            time.sleep(0.05)

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@pytest.fixture
def live_kernel(runkernel, spool) -> Kernel:
    return services.kernel_register(name="demo", state_dir=str(runkernel()))


@pytest.fixture
def idle_kernel(tmp_path, spool) -> Kernel:
    """Known to the console, with no process behind it: commands land in control.json."""
    state_dir = tmp_path / "idle"
    state_dir.mkdir()
    kernel = Kernel.objects.create(name="idle", state_dir=str(state_dir), state="running")
    Slot.objects.create(kernel=kernel, slot_id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="ema_cross",
                        params={"fast": 12, "slow": 26})
    return kernel


def _user(name: str, group: str) -> User:
    user = User.objects.create_user(name)
    user.groups.add(Group.objects.get(name=group))
    return User.objects.get(pk=user.pk)  # fresh: no stale permission cache


def _issue(kernel: Kernel, action: str, capture, actor: services.Actor = CLI, **kw) -> ControlCommand:
    with capture(execute=True):
        return services.command_issue(kernel=kernel, action=action, actor=actor, **kw)


def _events(action: str, **kw) -> int:
    return AuditEvent.objects.filter(action=action, **kw).count()


# ===================================================================== command life (real kernel)


@pytest.mark.integration
def test_command_life_pending_delivered_applied(live_kernel, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        command = services.command_issue(kernel=live_kernel, action="pause", actor=CLI)
        assert ControlCommand.objects.get(pk=command.pk).status == "pending"  # nothing sent before commit
    assert len(callbacks) == 1
    assert ControlCommand.objects.get(pk=command.pk).status == "delivered"
    control = json.loads(Path(live_kernel.state_dir, "control.json").read_text())
    assert command.command_id in [c["id"] for c in control["commands"]]

    command = services.command_wait(command=command, timeout_s=30)

    assert command.status == "applied", command.error
    assert command.resolved_at is not None
    live_kernel.refresh_from_db()
    assert live_kernel.state == "paused"
    assert _events("command.issued", command_id=command.command_id, actor="tester@host", source="cli") == 1
    applied = AuditEvent.objects.get(action="command.applied", command_id=command.command_id)
    assert (applied.actor, applied.source, applied.kernel_name) == ("tester@host", "kernel", "demo")


@pytest.mark.integration
def test_a_rejection_shows_the_kernels_reason(live_kernel, django_capture_on_commit_callbacks):
    command = _issue(live_kernel, "rollback", django_capture_on_commit_callbacks, args={"strategy": "ema_cross"})

    command = services.command_wait(command=command, timeout_s=30)

    assert command.status == "rejected"
    assert command.error == "no previous version of ema_cross to roll back to"
    event = AuditEvent.objects.get(action="command.rejected", command_id=command.command_id)
    assert event.payload["error"] == command.error


@pytest.mark.integration
def test_outcomes_are_audited_exactly_once_however_often_status_sync_runs(
        live_kernel, django_capture_on_commit_callbacks):
    reload = _issue(live_kernel, "reload", django_capture_on_commit_callbacks, args={"strategy": "breakout"})
    pause = _issue(live_kernel, "slot.pause", django_capture_on_commit_callbacks, slot_id="eth-5m")
    # A command a human wrote by hand: unknown to the console, audited all the same.
    append_commands(Path(live_kernel.state_dir), [Command(id="by-hand-1", action="slot.pause", slot="sol-5m")])
    assert services.command_wait(command=reload, timeout_s=30).status == "applied"
    assert services.command_wait(command=pause, timeout_s=30).status == "applied"
    deadline = time.monotonic() + 30
    while not _events("command.applied", command_id="by-hand-1"):
        assert time.monotonic() < deadline
        services.status_sync(kernel=live_kernel)
        time.sleep(0.05)

    for _ in range(5):
        services.status_sync(kernel=live_kernel)
        time.sleep(0.2)

    for command_id in (reload.command_id, pause.command_id, "by-hand-1"):
        assert _events("command.applied", command_id=command_id) == 1, command_id
    assert _events("reload.unchanged", command_id=reload.command_id) == 1
    assert AuditEvent.objects.get(action="command.applied", command_id="by-hand-1").actor == "kernel:demo"
    reloaded = AuditEvent.objects.get(action="reload.unchanged")
    assert reloaded.payload["old_sha256"] == reloaded.payload["new_sha256"]
    assert len(reloaded.payload["new_sha256"]) == 64


@pytest.mark.integration
def test_status_sync_mirrors_slots_fills_and_equity(live_kernel):
    summary = services.status_sync(kernel=live_kernel)
    assert summary["status"] == "ok"
    assert Slot.objects.filter(kernel=live_kernel).count() == 16
    btc = Slot.objects.get(kernel=live_kernel, slot_id="btc-5m")
    assert btc.running_config["symbol"] == "BTC/USDT" and btc.config_drift() == {}
    assert btc.state == "active"
    assert EquitySample.objects.filter(kernel=live_kernel).count() == 1
    services.status_sync(kernel=live_kernel)
    assert EquitySample.objects.filter(kernel=live_kernel).count() == 1  # at most one per ~10 s
    live_kernel.refresh_from_db()
    reported = {f["fill_id"] for f in live_kernel.status["fills"]}
    assert set(Fill.objects.filter(kernel=live_kernel).values_list("fill_id", flat=True)) >= reported


@pytest.mark.integration
def test_halt_release_resume_against_a_real_kernel(live_kernel, django_capture_on_commit_callbacks):
    risk = _user("rita", "Risk")
    actor = services.Actor(name="rita", source="api", user=risk, ip="10.0.0.1")

    halt = services.halt_engage(kernel=live_kernel, actor=actor, reason="runaway orders")

    assert halt is not None and halt.status == "delivered"
    control = json.loads(Path(live_kernel.state_dir, "control.json").read_text())
    assert control["halt"]["reason"] == "runaway orders" and control["halt"]["by"] == "rita"
    with pytest.raises(services.Conflict):
        # Until the kernel confirms, a release would cancel the halt before it was seen.
        services.command_issue(kernel=Kernel.objects.get(pk=live_kernel.pk), action="release", actor=actor)
    assert services.command_wait(command=halt, timeout_s=30).status == "applied"
    live_kernel.refresh_from_db()
    assert live_kernel.halt_engaged and live_kernel.state == "halted" and live_kernel.halt_requested_at is None
    with pytest.raises(services.Conflict):
        services.command_issue(kernel=live_kernel, action="resume", actor=actor)

    with django_capture_on_commit_callbacks(execute=True):
        release = services.halt_release(kernel=live_kernel, actor=actor)
    assert services.command_wait(command=release, timeout_s=30).status == "applied"
    live_kernel.refresh_from_db()
    assert live_kernel.state == "paused" and not live_kernel.halt_engaged
    resume = _issue(live_kernel, "resume", django_capture_on_commit_callbacks, actor=actor)
    assert services.command_wait(command=resume, timeout_s=30).status == "applied"

    for _ in range(3):
        services.status_sync(kernel=live_kernel)
    assert _events("halt.engaged", actor="rita", ip="10.0.0.1") == 1
    assert _events("halt.observed") == 1
    assert _events("halt.cleared") == 1
    assert _events("command.applied", command_id=release.command_id) == 1


# ===================================================================== commands (no kernel)


def test_release_when_not_halted_is_a_conflict(idle_kernel):
    with pytest.raises(services.Conflict, match="not halted"):
        services.halt_release(kernel=idle_kernel, actor=CLI)
    assert not ControlCommand.objects.exists()


def test_permissions_are_checked_before_anything_is_written(idle_kernel):
    viewer = services.Actor(name="vic", source="api", user=_user("vic", "Viewer"))
    operator = services.Actor(name="olga", source="api", user=_user("olga", "Operator"))
    anonymous = services.Actor(name="anonymous", source="api")
    for actor, action, kw in [
        (viewer, "pause", {}),
        (operator, "rollback", {"args": {"strategy": "ema_cross"}}),
        (operator, "slot.add", {"slot_id": "x-1m", "args": {}}),
        (anonymous, "pause", {}),
    ]:
        with pytest.raises(services.NotAllowed):
            services.command_issue(kernel=idle_kernel, action=action, actor=actor, **kw)
    with pytest.raises(services.NotAllowed):
        services.halt_engage(kernel=idle_kernel, actor=viewer, reason="x")
    assert not Path(idle_kernel.state_dir, "control.json").exists()
    assert not ControlCommand.objects.exists()


def test_unknown_slot_and_bad_commands(idle_kernel):
    with pytest.raises(services.NotFound):
        services.command_issue(kernel=idle_kernel, action="slot.pause", actor=CLI, slot_id="nope")
    with pytest.raises(services.ServiceError, match="needs a strategy"):
        services.command_issue(kernel=idle_kernel, action="rollback", actor=CLI)
    with pytest.raises(services.ServiceError, match="unknown action"):
        services.command_issue(kernel=idle_kernel, action="explode", actor=CLI)
    with pytest.raises(services.ServiceError, match="takes no slot"):
        services.command_issue(kernel=idle_kernel, action="pause", actor=CLI, slot_id="btc-5m")


def test_failed_delivery_stays_pending_and_is_redelivered(idle_kernel, tmp_path, django_capture_on_commit_callbacks):
    state_dir = Path(idle_kernel.state_dir)
    state_dir.rename(tmp_path / "moved-away")

    command = _issue(idle_kernel, "pause", django_capture_on_commit_callbacks)

    command.refresh_from_db()
    assert command.status == "pending" and "does not exist" in command.error and command.delivery_attempts == 1
    services.status_sync(kernel=idle_kernel)  # still missing: another attempt, audited once
    assert _events("command.delivery_failed", command_id=command.command_id) == 1
    (tmp_path / "moved-away").rename(state_dir)

    services.status_sync(kernel=idle_kernel)

    command.refresh_from_db()
    assert command.status == "delivered" and command.delivery_attempts == 3
    assert json.loads((state_dir / "control.json").read_text())["commands"][0]["id"] == command.command_id


def test_undelivered_commands_expire_once(idle_kernel, tmp_path, django_capture_on_commit_callbacks):
    Path(idle_kernel.state_dir).rename(tmp_path / "gone")
    command = _issue(idle_kernel, "pause", django_capture_on_commit_callbacks)
    ControlCommand.objects.filter(pk=command.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    services.status_sync(kernel=idle_kernel)
    services.status_sync(kernel=idle_kernel)

    command.refresh_from_db()
    assert command.status == "expired"
    assert _events("command.expired", command_id=command.command_id) == 1


def test_a_release_is_never_redelivered_late(idle_kernel, tmp_path, django_capture_on_commit_callbacks):
    Kernel.objects.filter(pk=idle_kernel.pk).update(halt_engaged=True, state="halted")
    idle_kernel.refresh_from_db()
    Path(idle_kernel.state_dir).rename(tmp_path / "gone")
    command = _issue(idle_kernel, "release", django_capture_on_commit_callbacks)
    command.refresh_from_db()
    assert command.status == "failed"  # it writes halt: false, which could cancel a newer halt


# ===================================================================== slot configuration


def test_slot_configure_validates_the_merged_config_and_the_strategy_params(idle_kernel):
    slot = Slot.objects.get(slot_id="btc-5m")
    cases = [
        ({"timeframe": "7m"}, "timeframe"),
        ({"symbol": "btc-usdt"}, "symbol"),
        ({"order_notional": 0}, "order_notional"),
        ({"params": {"fast": 30, "slow": 20}}, "params"),
        ({"params": {"fast": 1}}, "params.fast"),
        ({"params": {"colour": "red"}}, "params.colour"),
        ({"strategy": "no_such_strategy"}, "strategy"),
        ({"id": "other"}, "id"),
        ({"leverage": 100}, "leverage"),
    ]
    for changes, field in cases:
        with pytest.raises(services.ServiceError) as caught:
            services.slot_configure(slot=slot, changes=changes, actor=CLI)
        assert field in caught.value.errors, (changes, caught.value.errors)
    slot.refresh_from_db()
    assert (slot.timeframe, slot.params) == ("5m", {"fast": 12, "slow": 26})
    assert not ControlCommand.objects.exists() and not _events("config.changed")


def test_slot_configure_saves_audits_and_issues(idle_kernel, django_capture_on_commit_callbacks):
    slot = Slot.objects.get(slot_id="btc-5m")
    with django_capture_on_commit_callbacks(execute=True):
        command = services.slot_configure(slot=slot, changes={"strategy": "rsi_reversion", "params": {}},
                                          actor=CLI)
    slot.refresh_from_db()
    assert (slot.strategy, slot.params) == ("rsi_reversion", {})
    assert command.action == "slot.configure" and command.args["strategy"] == "rsi_reversion"
    assert set(command.args) == set(Slot.CONFIG_FIELDS)
    event = AuditEvent.objects.get(action="config.changed")
    assert event.payload["before"]["strategy"] == "ema_cross" and event.payload["after"]["strategy"] == "rsi_reversion"
    assert command.status == "delivered"


# ===================================================================== the spool


def test_spooled_events_are_written_once(spool, idle_kernel):
    services.audit_spool(action="halt.engaged", actor=CLI, kernel_name="idle", command_id="h1",
                         dedupe_key="halt.engaged:h1")
    services.audit_spool(action="halt.engaged", actor=CLI, kernel_name="idle", command_id="h1",
                         dedupe_key="halt.engaged:h1")  # the same event twice (a retried append)
    services.audit_spool(action="login.failed", actor=services.Actor(name="eve", source="admin", ip="10.9.9.9"))
    assert len(spool.read_text().splitlines()) == 3

    assert services.audit_spool_flush() == 2
    assert services.audit_spool_flush() == 0

    assert _events("halt.engaged", command_id="h1") == 1
    event = AuditEvent.objects.get(action="login.failed")
    assert (event.actor, event.ip, event.payload["spooled"]) == ("eve", "10.9.9.9", True)
    assert not spool.exists() or spool.read_text() == ""


def test_a_spooled_cli_command_creates_its_row(spool, idle_kernel):
    wire = services.command_issue_offline(state_dir=idle_kernel.state_dir, kernel_name="whatever",
                                          action="pause", actor=CLI)
    assert json.loads(Path(idle_kernel.state_dir, "control.json").read_text())["commands"][0]["id"] == wire.id

    services.audit_spool_flush()

    command = ControlCommand.objects.get(command_id=wire.id)
    assert (command.kernel, command.status, command.actor) == (idle_kernel, "delivered", "tester@host")
    assert AuditEvent.objects.get(action="command.issued", command_id=wire.id).kernel_name == "idle"


def test_halt_engage_spools_when_the_database_fails(spool, idle_kernel):
    """The database refuses every write (a read-only connection stands in for a locked or lost
    database here; tests/integration/test_console_kernel.py locks a real file database)."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA query_only = ON")
    try:
        command = services.halt_engage(kernel=idle_kernel, actor=CLI, reason="db is down")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA query_only = OFF")

    assert command is None
    assert json.loads(Path(idle_kernel.state_dir, "control.json").read_text())["halt"]["reason"] == "db is down"
    assert not _events("halt.engaged")
    line = json.loads(spool.read_text())
    assert line["action"] == "halt.engaged" and line["dedupe_key"].startswith("halt.engaged:halt-")

    assert services.audit_spool_flush() == 1
    assert services.audit_spool_flush() == 0
    assert _events("halt.engaged", kernel_name="idle", actor="tester@host") == 1
    assert ControlCommand.objects.get(action="halt").command_id == line["command_id"]


# ===================================================================== stale kernels, registration


def test_stale_heartbeat_is_audited_once_per_episode(idle_kernel, caplog):
    first = timezone.now() - timedelta(seconds=60)
    Kernel.objects.filter(pk=idle_kernel.pk).update(heartbeat_at=first)

    assert services.kernel_stale_check() == [idle_kernel]
    assert services.kernel_stale_check() == [idle_kernel]
    assert _events("kernel.stale") == 1
    assert any(r.levelname == "ERROR" and "stale" in r.getMessage() for r in caplog.records)

    Kernel.objects.filter(pk=idle_kernel.pk).update(heartbeat_at=timezone.now())
    assert services.kernel_stale_check() == []
    Kernel.objects.filter(pk=idle_kernel.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=30))
    services.kernel_stale_check()
    assert _events("kernel.stale") == 2  # a new episode


def test_kernel_register_is_idempotent(tmp_path):
    a = services.kernel_register(name="k1", state_dir=str(tmp_path))
    b = services.kernel_register(name="k1", state_dir=str(tmp_path))
    assert a.pk == b.pk and _events("kernel.registered") == 1
    with pytest.raises(services.Conflict):
        services.kernel_register(name="k2", state_dir=str(tmp_path))
    with pytest.raises(services.ServiceError):
        services.kernel_register(name="bad name!", state_dir=str(tmp_path / "x"))


# ===================================================================== tokens and roles


def test_tokens_store_only_a_hash_and_revoked_ones_stop_working():
    user = User.objects.create_user("tom")
    token, raw = services.token_create(user=user, name="ci")
    assert raw.startswith(f"fst_{token.prefix}_") and raw not in json.dumps(list(ApiToken.objects.values()),
                                                                           default=str)
    assert services.token_authenticate(raw) == user
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert services.token_authenticate(raw + "x") is None
    with pytest.raises(services.NotAllowed):
        services.token_revoke(token=token, actor=services.Actor(name="eve", source="api",
                                                                user=User.objects.create_user("eve")))
    services.token_revoke(token=token, actor=services.Actor(name="tom", source="api", user=user))
    assert services.token_authenticate(raw) is None


def test_roles_are_set_up_by_the_migration_and_idempotently():
    def perms(group: str) -> set[str]:
        return set(Group.objects.get(name=group).permissions.values_list("codename", flat=True))

    expected = {name: set(codenames) for name, codenames in services.role_permissions().items()}
    assert {g: perms(g) for g in expected} == expected
    Group.objects.get(name="Viewer").permissions.add(Permission.objects.get(codename="engage_halt"))
    services.roles_setup()
    services.roles_setup()
    assert {g: perms(g) for g in expected} == expected
    assert "release_halt" in expected["Risk"] and "release_halt" not in expected["Operator"]
    assert all(p.startswith("view_") for p in expected["Viewer"])


# ===================================================================== the audit log is append-only


def test_audit_events_cannot_be_edited_or_deleted_through_the_orm():
    event = services.audit_record(action="test.event", actor=CLI, payload={"a": 1})

    event.action = "forged"
    with pytest.raises(PermissionDenied):
        event.save()
    with pytest.raises(PermissionDenied):
        event.delete()
    with pytest.raises(PermissionDenied):
        AuditEvent.objects.filter(pk=event.pk).update(action="forged")
    with pytest.raises(PermissionDenied):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(PermissionDenied), transaction.atomic():  # bulk_update marks its transaction broken
        AuditEvent.objects.bulk_update([event], ["action"])
    table = AuditEvent._meta.db_table
    for sql in (f"UPDATE {table} SET action = 'forged' WHERE id = %s", f"DELETE FROM {table} WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [event.pk])

    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.action, stored.payload) == ("test.event", {"a": 1})


def test_dedupe_key_records_once():
    assert services.audit_record(action="x", actor=None, dedupe_key="k1") is not None
    assert services.audit_record(action="x", actor=None, dedupe_key="k1") is None
    assert _events("x") == 1


# ===================================================================== the dashboard


def test_kernel_dashboard_counts_closing_sells(idle_kernel):
    now = timezone.now()
    Slot.objects.filter(slot_id="btc-5m").update(unrealized_pnl=5.0)
    for i, (side, pnl) in enumerate([("buy", None), ("sell", 10.0), ("buy", None), ("sell", -4.0), ("sell", 2.0)]):
        Fill.objects.create(kernel=idle_kernel, fill_id=f"f{i}", client_order_id=f"o{i}", slot_id="btc-5m",
                            side=side, qty=1, price=100, fee=0.1, pnl=pnl, at=now - timedelta(minutes=5 - i))
    Fill.objects.create(kernel=idle_kernel, fill_id="old", client_order_id="o", slot_id="btc-5m", side="sell",
                        qty=1, price=1, fee=0, pnl=100.0, at=now - timedelta(days=3))
    EquitySample.objects.create(kernel=idle_kernel, at=now, equity=100_010.0)

    board = selectors.kernel_dashboard(kernel=idle_kernel, window=timedelta(hours=24))

    assert (board["total"]["trades"], board["total"]["wins"]) == (3, 2)
    assert board["total"]["win_rate"] == pytest.approx(2 / 3)
    assert board["total"]["realized_pnl"] == pytest.approx(8.0)
    assert board["total"]["unrealized_pnl"] == pytest.approx(5.0)
    assert board["slots"][0]["slot_id"] == "btc-5m" and board["slots"][0]["trades"] == 3
    assert [e["equity"] for e in board["equity"]] == [100_010.0]


def test_status_sync_if_stale_skips_a_fresh_mirror_and_syncs_an_old_one(db, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    from trading import services
    from trading.models import Kernel

    import os
    import time

    (tmp_path / "status.json").write_text("{}")
    past = time.time() - 10
    os.utime(tmp_path / "status.json", (past, past))
    kernel = Kernel.objects.create(name="fresh", state_dir=str(tmp_path), status_synced_at=timezone.now())
    assert services.status_sync_if_stale(kernel=kernel)["status"] == "fresh"
    # status.json rewritten after the last sync: sync, however recent the mirror.
    os.utime(tmp_path / "status.json", None)
    kernel.status_synced_at = timezone.now() - timedelta(seconds=0.5)
    assert services.status_sync_if_stale(kernel=kernel)["status"] == "unreadable"  # a real sync ran
    (tmp_path / "status.json").unlink()
    kernel.status_synced_at = timezone.now() - timedelta(seconds=5)
    assert services.status_sync_if_stale(kernel=kernel)["status"] == "missing"  # a real sync: no status.json
