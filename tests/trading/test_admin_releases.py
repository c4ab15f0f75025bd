"""Releases in the admin (trading/admin/releases.py, issue 11): the versions page (stored
versions, which slots run each, a readable diff), its buttons per role, each behind a
confirmation that asks for a reason; the canary and shadow on the dashboard; the kernels
list flagging drift loudly; the fleet-wide reload."""
from __future__ import annotations

import pytest
from django.urls import reverse

from tests.trading.admin_fixtures import (  # noqa: F401 (fixtures)
    kernel_url, login, no_kernel_to_wait_for, state_dir, texts,
)
from tests.trading.release_fixtures import (  # noqa: F401 (fixtures)
    canary_entry, release_kernel, resync, shadow_entry, store, write_release_status,
)
from trading import services
from trading.models import AuditEvent, ControlCommand

pytestmark = pytest.mark.django_db


def versions_url(kernel, strategy="ema_cross") -> str:
    return reverse("admin:trading_kernel_versions", args=[kernel.pk, strategy])


def step_url(kernel, step, strategy="ema_cross") -> str:
    return reverse("admin:trading_kernel_release_step", args=[kernel.pk, strategy, step])


def test_the_versions_page_lists_versions_slots_and_a_readable_diff(login, release_kernel, store):
    page = login("Viewer").get(versions_url(release_kernel), {"a": "1", "b": "2"})

    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="version-2"' in html and 'id="version-1"' in html
    row2 = html[html.index('id="version-2"'):html.index('id="version-1"')]
    assert "current" in row2 and "btc-5m, eth-5m" in row2 and "alice@host" in row2
    assert store[2][:12] in row2
    assert '<div class="fs-diff-del">-    return None</div>' in html
    assert '<div class="fs-diff-add">+    return &#x27;buy&#x27;</div>' in html
    assert "1 file(s) differ" in html
    # A Viewer sees no button.
    assert "rollback-v1" not in html and "canary-form" not in html and "shadow-form" not in html


def test_the_versions_page_flags_drift_loudly(login, release_kernel, state_dir):
    resync(release_kernel, state_dir, tick=11, differs=True)
    html = login("Viewer").get(versions_url(release_kernel)).content.decode()
    assert 'id="drift-banner"' in html and "the working tree differs from running v2" in html


@pytest.mark.parametrize("role,buttons", [
    ("Operator", {"canary-form", "shadow-form"}),
    ("Risk", {"canary-form", "shadow-form", "rollback-v1"}),
])
def test_the_buttons_each_role_sees(login, release_kernel, role, buttons):
    html = login(role).get(versions_url(release_kernel)).content.decode()
    assert {b for b in ("canary-form", "shadow-form", "rollback-v1", "rollback-v2") if b in html} == buttons


def test_rollback_to_a_version_confirms_asks_a_reason_then_issues(login, release_kernel, store):
    client = login("Risk")
    confirm = client.post(step_url(release_kernel, "rollback"), {"version": "1"})

    assert confirm.status_code == 200 and not ControlCommand.objects.exists()
    html = confirm.content.decode()
    assert "every slot of ema_cross goes back to v1" in html
    assert '<input type="hidden" name="version" value="1">' in html
    assert 'name="reason"' in html and " required>" in html

    refused = client.post(step_url(release_kernel, "rollback"), {"version": "1", "confirm": "yes", "reason": " "})
    assert texts(refused) == ["Rollback of ema_cross to v1 on k1: a reason is required (it goes into the audit log)"]
    assert not ControlCommand.objects.exists()

    done = client.post(step_url(release_kernel, "rollback"), {"version": "1", "confirm": "yes",
                                                               "reason": "v2 loses money"})
    assert done.status_code == 302 and done["Location"] == versions_url(release_kernel)
    command = ControlCommand.objects.get()
    assert (command.action, command.args, command.source) == ("rollback", {"strategy": "ema_cross", "version": 1},
                                                              "admin")
    assert texts(done)[-1] == f"Rollback of ema_cross to v1 on k1: sent, not confirmed yet " \
                              f"(command id {command.command_id})"
    assert AuditEvent.objects.get(action="version.rollback").payload["reason"] == "v2 loses money"


def test_an_operator_may_not_roll_back_but_may_start_a_canary(login, release_kernel):
    client = login("Operator")
    assert client.post(step_url(release_kernel, "rollback"), {"version": "1", "confirm": "yes",
                                                               "reason": "r"}).status_code == 403
    confirm = client.post(step_url(release_kernel, "canary"), {"slots": ["btc-5m"], "budget_cycles": "30"})
    html = confirm.content.decode()
    assert "run on btc-5m only" in html
    assert '<input type="hidden" name="slots" value="btc-5m">' in html
    assert '<input type="hidden" name="budget_cycles" value="30">' in html

    client.post(step_url(release_kernel, "canary"), {"slots": ["btc-5m"], "budget_cycles": "30", "confirm": "yes",
                                                      "reason": "new exit"})
    command = ControlCommand.objects.get()
    assert command.args == {"strategy": "ema_cross", "slots": ["btc-5m"], "budget": {"cycles": 30}}


def test_promote_and_abort_show_while_a_canary_runs(login, release_kernel, state_dir):
    client = login("Risk")
    assert "promote-button" not in client.get(versions_url(release_kernel)).content.decode()
    resync(release_kernel, state_dir, tick=11, canary=canary_entry(3, "c" * 64, ["btc-5m"]))
    html = client.get(versions_url(release_kernel)).content.decode()
    assert "promote-button" in html and "abort-button" in html and 'id="canary-ema_cross"' in html
    assert "A canary runs: promote it or abort it first." in html

    confirm = client.post(step_url(release_kernel, "promote"))
    assert "the canary version of ema_cross becomes current for EVERY slot" in confirm.content.decode()
    client.post(step_url(release_kernel, "promote"), {"confirm": "yes", "reason": "20 clean cycles"})
    assert ControlCommand.objects.get().action == "promote"


def test_the_dashboard_shows_the_canary_and_the_shadows_differences(login, release_kernel, state_dir):
    resync(release_kernel, state_dir, tick=11, differs=True,
           shadow=shadow_entry(3, "d" * 64, ["btc-5m"]))
    html = login("Viewer").get(kernel_url("dashboard", release_kernel)).content.decode()

    assert 'id="shadow-ema_cross"' in html and "differences <strong>2</strong>" in html
    assert "2026-12-07T10:05:00.000Z: hold → enter" in html
    assert "DRIFT: differs from running v2" in html
    assert versions_url(release_kernel) in html


def test_the_kernels_list_shows_what_runs_where_and_flags_drift(login, release_kernel, tmp_path, store):
    other = tmp_path / "k2"
    other.mkdir()
    write_release_status(other, running=1, differs=True)
    services.kernel_register(name="k2", state_dir=str(other))

    html = login("Viewer").get(reverse("admin:trading_kernel_changelist")).content.decode()

    assert 'id="fleet-ema_cross"' in html and "kernels run different versions" in html
    assert "DRIFT: working tree differs from running v1" in html
    assert "DRIFT: the fleet runs 2 versions" in html
    assert store[1][:12] in html and store[2][:12] in html
    assert "fleet-reload-ema_cross" not in html  # a Viewer may not


def test_a_fleet_reload_from_the_admin(login, release_kernel, tmp_path, store):
    other = tmp_path / "k2"
    other.mkdir()
    write_release_status(other, running=1)
    services.kernel_register(name="k2", state_dir=str(other))
    url = reverse("admin:trading_kernel_fleet_reload", args=["ema_cross"])
    assert login("Operator").post(url).status_code == 403

    client = login("Risk")
    assert "fleet-reload-ema_cross" in client.get(reverse("admin:trading_kernel_changelist")).content.decode()
    confirm = client.post(url)
    assert "reload ema_cross on 2 kernel(s)" in confirm.content.decode()
    done = client.post(url, {"confirm": "yes", "reason": "ship 2.1"})

    assert done.status_code == 302
    messages = texts(done)
    assert messages[0].startswith("Fleet reload of ema_cross: NOT converged")
    assert any(m.startswith("k1: pending") for m in messages) and any(m.startswith("k2: pending") for m in messages)
    assert set(ControlCommand.objects.values_list("kernel__name", "action")) == {("k1", "reload"), ("k2", "reload")}
