"""How the service tests act and count: a CLI actor, a user in a role, a command issued and
its commit callbacks run, the audit events of an action."""
from __future__ import annotations

from django.contrib.auth.models import Group, User

from trading import services
from trading.models import AuditEvent, ControlCommand, Kernel

CLI = services.Actor(name="tester@host", source="cli")


def user_in_group(name: str, group: str) -> User:
    user = User.objects.create_user(name)
    user.groups.add(Group.objects.get(name=group))
    return User.objects.get(pk=user.pk)  # fresh: no stale permission cache


def issue_committed(kernel: Kernel, action: str, capture, actor: services.Actor = CLI, **kw) -> ControlCommand:
    with capture(execute=True):
        return services.command_issue(kernel=kernel, action=action, actor=actor, **kw)


def audit_count(action: str, **kw) -> int:
    return AuditEvent.objects.filter(action=action, **kw).count()
