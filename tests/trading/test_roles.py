"""trading.services.roles: the Viewer, Operator and Risk groups, from the migration and
idempotently."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission

from trading import services

pytestmark = pytest.mark.django_db


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
