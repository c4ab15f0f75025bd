"""trading.services.releases and the release reads (issue 11): rollback to a stored version,
canary, shadow, promote, abort and a fleet-wide reload, each checked (permission, reason,
shape, the kernel's latest word) before anything is written, issued as a command, and audited
with its reason; the versions, the diff and the fleet's drift read from real state-dir files."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone

from kernel.protocol import CommandStatus
from tests.support.status_reader import read_control as control_json
from tests.trading.admin_fixtures import iso, slot_status, state_dir, write_kernel_status  # noqa: F401
from tests.trading.release_fixtures import (  # noqa: F401 - fixtures
    canary_entry,
    release_kernel,
    resync,
    shadow_entry,
    store,
    strategy_entry,
    write_release_status,
)
from tests.trading.service_calls import user_in_group
from trading import selectors, services
from trading.models import AuditEvent, ControlCommand, Kernel
from trading.services import releases

pytestmark = pytest.mark.django_db


@pytest.fixture
def roles():
    services.roles_setup()
    return {name: services.Actor(name=name.lower(), source="api", user=user_in_group(name.lower(), name))
            for name in ("Viewer", "Operator", "Risk")}


def _wire(kernel: Kernel) -> list[dict]:
    path = Path(kernel.state_dir, "control.json")
    return control_json(kernel.state_dir)["commands"] if path.exists() else []


def _issued(call, capture):
    with capture(execute=True):
        return call()


def _nothing_written(kernel: Kernel) -> None:
    assert not ControlCommand.objects.filter(kernel=kernel).exists()
    assert not AuditEvent.objects.filter(action__startswith="version.").exists()
    assert _wire(kernel) == []


# ---------------------------------------------------------------- rollback to a version


def test_rollback_to_a_version_is_a_rollback_command_audited_with_its_reason(
        release_kernel, store, roles, django_capture_on_commit_callbacks):
    command = _issued(lambda: services.release_rollback(
        kernel=release_kernel, strategy="ema_cross", version=1, actor=roles["Risk"], reason="v2 misbehaves"),
        django_capture_on_commit_callbacks)

    assert (command.action, command.args) == ("rollback", {"strategy": "ema_cross", "version": 1})
    assert [(c["action"], c["args"]) for c in _wire(release_kernel)] == [
        ("rollback", {"strategy": "ema_cross", "version": 1})]
    event = AuditEvent.objects.get(action="version.rollback")
    assert (event.command_id, event.actor, event.outcome) == (command.command_id, "risk", "issued")
    assert event.payload["reason"] == "v2 misbehaves"
    assert AuditEvent.objects.filter(action="command.issued", command_id=command.command_id).count() == 1


def test_rollback_by_sha256_and_to_the_previous_version(release_kernel, store, roles):
    by_sha = services.release_rollback(kernel=release_kernel, strategy="ema_cross", sha256=store[1].upper(),
                                       actor=roles["Risk"], reason="back")
    previous = services.release_rollback(kernel=release_kernel, strategy="ema_cross", actor=roles["Risk"],
                                         reason="back")
    assert by_sha.args == {"strategy": "ema_cross", "sha256": store[1]}
    assert previous.args == {"strategy": "ema_cross"}


@pytest.mark.parametrize("kw,message", [
    ({"version": 7}, "has no stored v7 of ema_cross"),
    ({"sha256": "a" * 64}, "has no stored sha256 aaaaaaaaaaaa"),
    ({"version": 1, "sha256": "a" * 64}, "not both"),
    ({"version": 0}, "version must be a number from 1"),
    ({"sha256": "abc"}, "64 hex digits"),
])
def test_a_bad_rollback_is_refused_and_writes_nothing(release_kernel, store, roles, kw, message):
    with pytest.raises(services.ServiceError, match=message):
        services.release_rollback(kernel=release_kernel, strategy="ema_cross", actor=roles["Risk"], reason="r", **kw)
    _nothing_written(release_kernel)


@pytest.mark.parametrize("reason", ["", "   ", None, "x" * 501])
def test_every_release_step_needs_a_reason(release_kernel, roles, reason):
    calls = [
        lambda: services.release_rollback(kernel=release_kernel, strategy="ema_cross", actor=roles["Risk"],
                                          reason=reason),
        lambda: services.release_canary(kernel=release_kernel, strategy="ema_cross", slots=["btc-5m"],
                                        actor=roles["Risk"], reason=reason),
        lambda: services.release_shadow(kernel=release_kernel, strategy="ema_cross", actor=roles["Risk"],
                                        reason=reason),
        lambda: services.release_promote(kernel=release_kernel, strategy="ema_cross", actor=roles["Risk"],
                                         reason=reason),
        lambda: services.release_abort(kernel=release_kernel, strategy="ema_cross", actor=roles["Risk"],
                                       reason=reason),
        lambda: services.fleet_reload(strategy="ema_cross", actor=roles["Risk"], reason=reason, timeout_s=0),
    ]
    for call in calls:
        with pytest.raises(services.ServiceError, match="reason"):
            call()
    _nothing_written(release_kernel)


# ---------------------------------------------------------------- roles


def test_the_roles_of_the_release_steps(release_kernel, state_dir, roles):
    """Operator: canary and shadow. Risk: rollback, abort, promote, the fleet. Viewer: none."""
    def steps(actor):
        return {
            "rollback": lambda: services.release_rollback(kernel=release_kernel, strategy="ema_cross", version=1,
                                                          actor=actor, reason="r"),
            "canary": lambda: services.release_canary(kernel=release_kernel, strategy="ema_cross",
                                                      slots=["btc-5m"], actor=actor, reason="r"),
            "shadow": lambda: services.release_shadow(kernel=release_kernel, strategy="ema_cross", actor=actor,
                                                      reason="r"),
            "promote": lambda: services.release_promote(kernel=release_kernel, strategy="ema_cross", actor=actor,
                                                        reason="r"),
            "abort": lambda: services.release_abort(kernel=release_kernel, strategy="ema_cross", actor=actor,
                                                    reason="r"),
            "fleet": lambda: services.fleet_reload(strategy="ema_cross", actor=actor, reason="r", timeout_s=0),
        }

    allowed = {}
    for role, actor in roles.items():
        for step, call in steps(actor).items():
            try:
                with transaction.atomic():
                    call()
                    transaction.set_rollback(True)  # each case from the same start
                allowed[(role, step)] = True
            except services.NotAllowed:
                allowed[(role, step)] = False
            except services.ServiceError:  # allowed, refused for another reason (nothing to promote…)
                allowed[(role, step)] = True
    assert {k for k, v in allowed.items() if v} == {
        ("Operator", "canary"), ("Operator", "shadow"),
        ("Risk", "rollback"), ("Risk", "canary"), ("Risk", "shadow"), ("Risk", "promote"), ("Risk", "abort"),
        ("Risk", "fleet"),
    }
    assert {"promote_strategy", "deploy_fleet"} <= set(services.role_permissions()["Risk"])
    assert not {"promote_strategy", "deploy_fleet"} & set(services.role_permissions()["Operator"])


# ---------------------------------------------------------------- canary and shadow


def test_a_canary_on_chosen_slots_with_a_budget(release_kernel, roles, django_capture_on_commit_callbacks):
    command = _issued(lambda: services.release_canary(
        kernel=release_kernel, strategy="ema_cross", slots=["btc-5m", "btc-5m"], budget={"cycles": 30, "faults": 0},
        actor=roles["Operator"], reason="try the new exit"), django_capture_on_commit_callbacks)

    args = {"strategy": "ema_cross", "slots": ["btc-5m"], "budget": {"cycles": 30, "faults": 0}}
    assert (command.action, command.args) == ("reload", args)
    assert [c["args"] for c in _wire(release_kernel)] == [args]
    event = AuditEvent.objects.get(action="version.canary")
    assert event.payload["reason"] == "try the new exit" and event.command_id == command.command_id


@pytest.mark.parametrize("slots,budget,message", [
    ([], None, "at least one slot"),
    (["sol-5m"], None, "has no slot sol-5m"),
    (["btc-5m"], {"cycles": 0}, "budget.cycles"),
    (["btc-5m"], {"faults": -1}, "budget.faults"),
    (["btc-5m"], {"minutes": 3}, "unknown budget field"),
])
def test_a_bad_canary_is_refused_and_writes_nothing(release_kernel, roles, slots, budget, message):
    with pytest.raises(services.ServiceError, match=message):
        services.release_canary(kernel=release_kernel, strategy="ema_cross", slots=slots, budget=budget,
                                actor=roles["Operator"], reason="r")
    _nothing_written(release_kernel)


def test_a_canary_on_a_slot_of_another_strategy_is_refused(release_kernel, roles):
    release_kernel.slots.filter(slot_id="eth-5m").update(strategy="rsi_reversion")
    with pytest.raises(services.ServiceError, match="eth-5m does not run ema_cross"):
        services.release_canary(kernel=release_kernel, strategy="ema_cross", slots=["btc-5m", "eth-5m"],
                                actor=roles["Operator"], reason="r")
    _nothing_written(release_kernel)


def test_one_canary_or_shadow_at_a_time(release_kernel, state_dir, store, roles):
    resync(release_kernel, state_dir, tick=11, canary=canary_entry(3, "c" * 64, ["btc-5m"]))
    for call in (
        lambda: services.release_canary(kernel=release_kernel, strategy="ema_cross", slots=["eth-5m"],
                                        actor=roles["Operator"], reason="r"),
        lambda: services.release_shadow(kernel=release_kernel, strategy="ema_cross", actor=roles["Operator"],
                                        reason="r"),
    ):
        with pytest.raises(services.Conflict, match="a canary of ema_cross runs on k1"):
            call()
    _nothing_written(release_kernel)
    # A canary that ended (rolled back by the kernel) no longer stands in the way.
    resync(release_kernel, state_dir, tick=12, canary=canary_entry(3, "c" * 64, ["btc-5m"], "auto_rolled_back"))
    command = services.release_shadow(kernel=release_kernel, strategy="ema_cross", cycles=10,
                                      actor=roles["Operator"], reason="watch it first")
    assert command.args == {"strategy": "ema_cross", "shadow": True, "cycles": 10}


def test_promote_and_abort_need_something_running(release_kernel, state_dir, roles,
                                                  django_capture_on_commit_callbacks):
    for call in (services.release_promote, services.release_abort):
        with pytest.raises(services.Conflict, match="no canary or shadow of ema_cross runs on k1"):
            call(kernel=release_kernel, strategy="ema_cross", actor=roles["Risk"], reason="r")
    _nothing_written(release_kernel)

    resync(release_kernel, state_dir, tick=11, shadow=shadow_entry(3, "d" * 64, ["btc-5m", "eth-5m"]))
    promote = _issued(lambda: services.release_promote(kernel=release_kernel, strategy="ema_cross",
                                                       actor=roles["Risk"], reason="shadow agrees"),
                      django_capture_on_commit_callbacks)
    abort = _issued(lambda: services.release_abort(kernel=release_kernel, strategy="ema_cross", actor=roles["Risk"],
                                                   reason="changed my mind"), django_capture_on_commit_callbacks)
    assert [(c["action"], c["args"]) for c in _wire(release_kernel)] == [
        ("promote", {"strategy": "ema_cross"}), ("rollback", {"strategy": "ema_cross"})]
    assert [e.payload["reason"] for e in AuditEvent.objects.filter(action__startswith="version.").order_by("id")] == [
        "shadow agrees", "changed my mind"]
    assert {promote.action, abort.action} == {"promote", "rollback"}


def test_a_halted_kernel_refuses_every_release_step(release_kernel, roles):
    Kernel.objects.filter(pk=release_kernel.pk).update(halt_engaged=True)
    release_kernel.refresh_from_db()
    with pytest.raises(services.Conflict, match="halted: release the halt first, then roll back"):
        services.release_rollback(kernel=release_kernel, strategy="ema_cross", version=1, actor=roles["Risk"],
                                  reason="r")
    with pytest.raises(services.Conflict, match="halted: release the halt first, then start a canary"):
        services.release_canary(kernel=release_kernel, strategy="ema_cross", slots=["btc-5m"],
                                actor=roles["Risk"], reason="r")
    _nothing_written(release_kernel)


# ---------------------------------------------------------------- reads


def test_the_versions_of_a_strategy_and_which_slots_run_them(release_kernel, store):
    listing = selectors.strategy_versions(kernel=release_kernel, strategy="ema_cross")

    assert [(v["number"], v["sha256"], v["current"], v["previous"]) for v in listing["versions"]] == [
        (2, store[2], True, False), (1, store[1], False, True)]
    assert listing["versions"][0]["slots"] == ["btc-5m", "eth-5m"] and listing["versions"][1]["slots"] == []
    assert listing["versions"][1]["by"] == "alice@host" and listing["versions"][1]["commit"] == "uncommitted"
    assert listing["versions"][0]["files"] == ["ema_cross.py", "indicators.py"]
    assert (listing["version"], listing["drift"], listing["store_error"]) == (2, False, "")


def test_a_corrupt_store_entry_is_listed_as_such(release_kernel, state_dir, store):
    Path(state_dir, "versions", store[1], "ema_cross.py").write_text("def evaluate(ctx):\n    return 'sell'\n")
    listing = selectors.strategy_versions(kernel=release_kernel, strategy="ema_cross")
    corrupt = {v["number"]: v["corrupt"] for v in listing["versions"]}
    assert corrupt[2] == "" and "no longer hashes" in corrupt[1]
    with pytest.raises(services.ServiceError, match="corrupt"):
        selectors.version_diff(kernel=release_kernel, strategy="ema_cross", a=1, b=2)


def test_a_diff_between_two_stored_versions_per_file(release_kernel, store):
    diff = selectors.version_diff(kernel=release_kernel, strategy="ema_cross", a="1", b=store[2][:8])

    assert (diff["a"]["number"], diff["b"]["number"], diff["changed"]) == (1, 2, 1)
    files = {f["name"]: f for f in diff["files"]}
    assert files["indicators.py"]["status"] == "same" and files["indicators.py"]["diff"] == ""
    assert files["ema_cross.py"]["status"] == "changed"
    assert "-    return None\n+    return 'buy'\n" in files["ema_cross.py"]["diff"]
    assert files["ema_cross.py"]["diff"].startswith("--- v1/ema_cross.py\n+++ v2/ema_cross.py\n")
    kinds = [line["kind"] for line in files["ema_cross.py"]["lines"]]
    assert kinds[:3] == ["file", "file", "hunk"] and "add" in kinds and "del" in kinds
    with pytest.raises(services.NotFound, match="no stored version 9 of ema_cross"):
        selectors.version_diff(kernel=release_kernel, strategy="ema_cross", a=1, b=9)


def test_the_store_of_a_kernel_on_another_host_is_not_read(release_kernel):
    Kernel.objects.filter(pk=release_kernel.pk).update(host="elsewhere.example", queue="elsewhere")
    release_kernel.refresh_from_db()
    listing = selectors.strategy_versions(kernel=release_kernel, strategy="ema_cross")
    assert listing["versions"] == [] and "on elsewhere.example" in listing["store_error"]


def test_fleet_drift_kernels_apart_and_a_working_tree_that_differs(release_kernel, tmp_path, store):
    other_dir = tmp_path / "k2"
    other_dir.mkdir()
    write_release_status(other_dir, running=1, differs=True)
    services.kernel_register(name="k2", state_dir=str(other_dir))

    fleet = selectors.fleet_strategies()

    entry = fleet["ema_cross"]
    assert entry["drift"] is True and entry["shas"] == sorted(store.values())
    assert entry["kernels"]["k1"]["sha256"] == store[2] and entry["kernels"]["k2"]["sha256"] == store[1]
    assert entry["reasons"][0].startswith("kernels run different versions: k1 v2")
    assert "k2: working tree differs from running v1" in entry["reasons"]


# ---------------------------------------------------------------- the fleet


def test_a_fleet_reload_reports_per_kernel_and_refuses_a_halted_one(release_kernel, tmp_path, store, roles,
                                                                   django_capture_on_commit_callbacks):
    other_dir = tmp_path / "k2"
    other_dir.mkdir()
    write_release_status(other_dir, running=1)
    k2 = services.kernel_register(name="k2", state_dir=str(other_dir))
    halted_dir = tmp_path / "k3"
    halted_dir.mkdir()
    write_release_status(halted_dir, running=2)
    k3 = services.kernel_register(name="k3", state_dir=str(halted_dir))
    Kernel.objects.filter(pk=k3.pk).update(halt_engaged=True)
    with pytest.raises(services.NotAllowed):
        services.fleet_reload(strategy="ema_cross", actor=roles["Operator"], reason="r", timeout_s=0)

    with django_capture_on_commit_callbacks(execute=True):
        report = services.fleet_reload(strategy="ema_cross", actor=roles["Risk"], reason="ship 2.1", timeout_s=0)

    rows = {r.kernel: r for r in report.kernels}
    assert set(rows) == {"k1", "k2", "k3"}
    assert rows["k3"].status == "refused" and "halted" in rows["k3"].error
    assert [c["args"] for c in _wire(release_kernel)] == [{"strategy": "ema_cross"}]
    assert [c["args"] for c in _wire(k2)] == [{"strategy": "ema_cross"}]
    assert _wire(k3) == []
    # No kernel answered (none runs here): nothing converged, and each says what it runs.
    assert (rows["k1"].sha256, rows["k2"].sha256) == (store[2], store[1])
    assert report.converged is False and not any(r.converged for r in report.kernels)
    assert report.sha256 == store[2]  # k1 and k3 run it: the most common one
    event = AuditEvent.objects.get(action="fleet.reload")
    assert event.outcome == "diverged" and event.payload["reason"] == "ship 2.1"
    assert AuditEvent.objects.filter(action="version.fleet_reload").count() == 2


def test_a_fleet_reload_converges_when_every_kernel_runs_one_sha256(release_kernel, tmp_path, store, roles,
                                                                    django_capture_on_commit_callbacks,
                                                                    monkeypatch):
    """The kernels' answers (applied, now running v2), written as a kernel writes them."""
    other_dir = tmp_path / "k2"
    other_dir.mkdir()
    write_release_status(other_dir, running=1)
    services.kernel_register(name="k2", state_dir=str(other_dir))
    real_wait = releases.command_wait

    def kernel_answers(*, command, timeout_s):
        # What the kernel would do on reading control.json: apply the reload, now on v2.
        result = CommandStatus(id=command.command_id, action="reload", result="applied", at=iso(timezone.now()))
        write_kernel_status(Path(command.kernel.state_dir), tick=50, commands=[result],
                            slots=[slot_status("btc-5m", "BTC/USDT")],
                            strategies={"ema_cross": strategy_entry(2, store[2])})
        return real_wait(command=command, timeout_s=timeout_s)

    monkeypatch.setattr(releases, "command_wait", kernel_answers)
    with django_capture_on_commit_callbacks(execute=True):
        report = services.fleet_reload(strategy="ema_cross", actor=roles["Risk"], reason="ship", timeout_s=1,
                                       sha256=store[2])

    assert report.converged is True and report.sha256 == store[2]
    assert [(r.kernel, r.status, r.version, r.converged) for r in report.kernels] == [
        ("k1", "applied", 2, True), ("k2", "applied", 2, True)]
    assert AuditEvent.objects.get(action="fleet.reload").outcome == "converged"
