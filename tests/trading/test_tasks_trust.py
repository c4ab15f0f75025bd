"""trading/tasks.py and services/host_kernels.py: a task message is not trusted.

A task carries a command's id or a kernel's name, nothing else; the worker takes the actor
from the row the console wrote and the state dir from its own host's FORESIGHT_HOST_KERNELS.
A forged message (a path, an actor, an unknown kernel, a row that disagrees with the host)
is refused, audited as "task.refused", and writes nothing anywhere. The tasks are applied
here as a worker runs them (``apply``); tests/integration/test_celery_redis.py runs them in
real workers on a real Redis.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from foresight_site.environment import host_kernels as parse_host_kernels
from tests.support.status_reader import read_control as control_json
from trading import tasks
from trading.models import AuditEvent, ControlCommand, Kernel
from trading.services import halts

pytestmark = pytest.mark.django_db


@pytest.fixture
def worker(settings, monkeypatch):
    """This process as a kernel host's worker: a broker configured (no in-process trust of the
    rows), the host's allowlist set by the test; the halt task looks for its row briefly."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.FORESIGHT_HOST_KERNELS = {}
    monkeypatch.setattr(halts, "HALT_ROW_WAIT_S", 0.1)
    return settings


def files_under(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size and mtime: "nothing written anywhere"."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            st = path.stat()
            out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out


def halt_row(kernel: Kernel, *, actor: str = "rita", reason: str = "runaway orders") -> ControlCommand:
    """The halt's row as the console writes it for a kernel behind a queue (pending)."""
    return ControlCommand.objects.create(
        command_id=f"halt-20250101T000000.000000Z-{os.urandom(5).hex()}", kernel=kernel, action="halt",
        args={"reason": reason}, actor=actor, source="api", issued_at=timezone.now(),
        status=ControlCommand.Status.PENDING)


def refusals() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="task.refused").order_by("id"))


def test_the_halt_task_writes_the_rows_reason_and_actor_into_the_allowlisted_state_dir(worker, idle_kernel):
    worker.FORESIGHT_HOST_KERNELS = {"idle": idle_kernel.state_dir}
    halt = halt_row(idle_kernel)

    assert tasks.deliver_halt.apply(args=(halt.command_id, "idle")).get() == "written"

    control = control_json(idle_kernel.state_dir)
    assert (control["halt"]["reason"], control["halt"]["by"]) == ("runaway orders", "rita")
    halt.refresh_from_db()
    assert halt.status == ControlCommand.Status.DELIVERED
    assert not refusals()


@pytest.mark.parametrize("args, kwargs, reason", [
    # the message of old: a state dir, a reason and an actor of the sender's choosing
    (("{halt}", "{dir}", "forged", "mallory"), {}, "unexpected arguments"),
    (("{halt}", "idle"), {"by": "mallory"}, "unexpected arguments"),
    (("{halt}", "{dir}"), {}, "not a kernel name"),
    (("{halt}", "../../etc"), {}, "not a kernel name"),
    (("/tmp/x/control.json", "idle"), {}, "not a halt's command id"),
])
def test_a_forged_halt_message_is_refused_audited_and_writes_nothing(
        worker, idle_kernel, tmp_path, args, kwargs, reason):
    worker.FORESIGHT_HOST_KERNELS = {"idle": idle_kernel.state_dir}
    halt = halt_row(idle_kernel)
    target = tmp_path / "elsewhere"
    args = tuple(a.format(halt=halt.command_id, dir=target) for a in args)
    before = files_under(tmp_path)

    assert tasks.deliver_halt.apply(args=args, kwargs=kwargs).get() == "refused"

    assert files_under(tmp_path) == before and not target.exists()
    [event] = refusals()
    assert event.payload["task"] == "trading.deliver_halt" and reason in event.payload["reason"]
    assert event.payload["message"]["command_id"] == args[0] and event.outcome == "refused"
    halt.refresh_from_db()
    assert halt.status == ControlCommand.Status.PENDING


def test_a_halt_for_a_kernel_this_host_does_not_run_is_refused(worker, idle_kernel, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    worker.FORESIGHT_HOST_KERNELS = {"other": str(other)}
    halt = halt_row(idle_kernel)
    before = files_under(tmp_path)

    assert tasks.deliver_halt.apply(args=(halt.command_id, "idle")).get() == "refused"
    # A real row, but named under another kernel: the row decides, and it is not this host's.
    assert tasks.deliver_halt.apply(args=(halt.command_id, "other")).get() == "refused"

    assert files_under(tmp_path) == before
    first, second = refusals()
    assert (first.kernel_name, first.command_id) == ("idle", halt.command_id)
    assert "not one of this host's kernels" in first.payload["reason"]
    assert "is for kernel 'idle'" in second.payload["reason"]


def test_a_row_pointing_elsewhere_than_the_hosts_allowlist_is_refused(worker, idle_kernel, tmp_path):
    """Someone with the console's database moved the kernel's row: the host's own word wins."""
    real = tmp_path / "real-idle"
    real.mkdir()
    worker.FORESIGHT_HOST_KERNELS = {"idle": str(real)}
    halt = halt_row(idle_kernel)
    before = files_under(tmp_path)

    assert tasks.deliver_halt.apply(args=(halt.command_id, "idle")).get() == "refused"

    assert files_under(tmp_path) == before
    assert "registered at" in refusals()[0].payload["reason"]


def test_a_halt_with_no_row_is_refused_once_its_retries_are_spent(worker, idle_kernel, tmp_path):
    worker.FORESIGHT_HOST_KERNELS = {"idle": idle_kernel.state_dir}
    forged = "halt-20250101T000000.000000Z-0123456789"
    before = files_under(tmp_path)

    assert tasks.deliver_halt.apply(args=(forged, "idle")).get() == "refused"
    assert tasks.deliver_halt.apply(args=(forged, "idle")).get() == "refused"  # redelivered

    assert files_under(tmp_path) == before
    [event] = refusals()  # the same message is audited once
    assert event.command_id == forged and "no halt" in event.payload["reason"]


def test_without_an_allowlist_a_worker_touches_no_kernel(worker, idle_kernel, tmp_path):
    halt = halt_row(idle_kernel)
    command = ControlCommand.objects.create(command_id="c-trust-1", kernel=idle_kernel, action="pause",
                                            actor="olga", source="api", issued_at=timezone.now())
    before = files_under(tmp_path)

    assert tasks.deliver_halt.apply(args=(halt.command_id, "idle")).get() == "refused"
    assert tasks.deliver_command.apply(args=(command.pk,)).get() == "refused"

    assert files_under(tmp_path) == before
    assert {e.payload["task"] for e in refusals()} == {"trading.deliver_halt", "trading.deliver_command"}
    assert all("FORESIGHT_HOST_KERNELS is not set" in e.payload["reason"] for e in refusals())


def test_the_delivery_task_takes_a_row_id_only_and_delivers_its_actor_to_the_allowlisted_dir(
        worker, idle_kernel, tmp_path):
    command = ControlCommand.objects.create(command_id="c-trust-2", kernel=idle_kernel, action="pause",
                                            actor="olga", source="api", issued_at=timezone.now())
    before = files_under(tmp_path)

    assert tasks.deliver_command.apply(args=(str(tmp_path / "evil"),)).get() == "refused"
    assert tasks.deliver_command.apply(args=(command.pk,), kwargs={"issued_by": "mallory"}).get() == "refused"
    worker.FORESIGHT_HOST_KERNELS = {"someone-else": str(tmp_path)}
    assert tasks.deliver_command.apply(args=(command.pk,)).get() == "refused"
    assert files_under(tmp_path) == before
    assert len(refusals()) == 3

    worker.FORESIGHT_HOST_KERNELS = {"idle": idle_kernel.state_dir}
    assert tasks.deliver_command.apply(args=(command.pk,)).get() == "delivered"
    [wire] = control_json(idle_kernel.state_dir)["commands"]
    assert (wire["id"], wire["issued_by"]) == ("c-trust-2", "olga")


def test_the_host_sync_touches_only_this_hosts_kernels_and_audits_the_others_once(worker, idle_kernel, tmp_path):
    Kernel.objects.filter(pk=idle_kernel.pk).update(queue="host-a")
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    Kernel.objects.create(name="stranger", state_dir=str(stranger), queue="host-a")
    ControlCommand.objects.create(command_id="c-trust-3", kernel=Kernel.objects.get(name="stranger"),
                                  action="pause", actor="olga", source="api", delivery_attempts=1,
                                  issued_at=timezone.now())  # owed: the sync would re-send it
    worker.FORESIGHT_HOST_KERNELS = {"idle": idle_kernel.state_dir}

    for _ in range(2):
        summaries = tasks.sync_host_kernels.apply(args=("host-a",)).get()

    by_kernel = {s.get("kernel"): s for s in summaries}
    assert by_kernel["stranger"]["status"] == "refused" and by_kernel["idle"]["status"] == "missing"
    assert not (stranger / "control.json").exists()
    [event] = refusals()
    assert event.kernel_name == "stranger" and event.payload["task"] == "trading.sync_host_kernels"
    assert tasks.sync_host_kernels.apply(args=("host-a", "/etc")).get() == "refused"


def test_the_allowlist_setting_is_parsed_strictly():
    assert parse_host_kernels(" demo=/srv/foresight/var/kernel , k_2=/srv/k2/ ") == {
        "demo": "/srv/foresight/var/kernel", "k_2": "/srv/k2"}
    assert parse_host_kernels("") == {}
    for bad in ("demo", "demo=relative/dir", "../x=/srv/x", "a=/x,a=/y", "=/srv/x"):
        with pytest.raises(ImproperlyConfigured, match="FORESIGHT_HOST_KERNELS"):
            parse_host_kernels(bad)
