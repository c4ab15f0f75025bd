"""trading.services.task_queue: the services enqueue Celery tasks by name only; each name is
a registered task (run here, eagerly, when there is no broker) and the one beat and the
routes use."""
from __future__ import annotations

from pathlib import Path

import pytest
from celery import current_app
from django.conf import settings as django_settings

from tests.trading.service_calls import CLI, issue_committed
from trading import services
from trading.models import AuditEvent, ControlCommand, Kernel
from trading.services import task_queue
from tests.support.status_reader import read_control as control_json

pytestmark = pytest.mark.django_db

NAMES = (task_queue.DELIVER_COMMAND, task_queue.DELIVER_HALT, task_queue.SYNC_HOST_KERNELS,
         task_queue.CHECK_STALE_KERNELS, task_queue.EXPIRE_COMMANDS, task_queue.SEND_NOTIFICATIONS)


def test_every_task_name_is_a_registered_task_and_the_settings_use_them():
    assert set(NAMES) <= set(current_app.tasks)
    scheduled = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled | set(django_settings.CELERY_TASK_ROUTES) <= set(NAMES)


def test_a_kernel_behind_a_queue_is_delivered_by_its_task_here_without_a_broker(
        idle_kernel, django_capture_on_commit_callbacks):
    Kernel.objects.filter(pk=idle_kernel.pk).update(queue="host-a")
    idle_kernel.refresh_from_db()

    command = issue_committed(idle_kernel, "pause", django_capture_on_commit_callbacks)

    assert command.status == "delivered" and command.delivery_attempts == 1
    control = control_json(idle_kernel.state_dir)
    assert [c["id"] for c in control["commands"]] == [command.command_id]


def test_a_halt_for_another_host_goes_through_its_halt_task(idle_kernel, django_capture_on_commit_callbacks):
    Kernel.objects.filter(pk=idle_kernel.pk).update(queue="host-a", host="another-host")
    idle_kernel.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        command = services.halt_engage(kernel=idle_kernel, actor=CLI, reason="far away")
        assert control_json(idle_kernel.state_dir) is None  # the task reads the row: after the commit

    # Eagerly (no broker), the task ran once the row committed, as a worker on that host does:
    # the reason and the actor come from the row, not from the message.
    control = control_json(idle_kernel.state_dir)
    assert (control["halt"]["reason"], control["halt"]["by"]) == ("far away", "tester@host")
    command.refresh_from_db()
    assert command.status == ControlCommand.Status.DELIVERED and command.error == ""
    event = AuditEvent.objects.get(action="halt.engaged")
    assert (event.outcome, event.payload["path"]) == ("queued", "host-a.halt")
