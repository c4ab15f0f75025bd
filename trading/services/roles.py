"""The console's roles: groups Viewer, Operator and Risk with exactly their permissions."""
from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db import transaction

from .errors import ServiceError

TRADING_MODELS = ("kernel", "slot", "controlcommand", "auditevent", "apitoken", "fill", "equitysample")
ROLE_VIEWER = "Viewer"
ROLE_OPERATOR = "Operator"
ROLE_RISK = "Risk"


def role_permissions() -> dict[str, list[str]]:
    """Role name → permission codenames (all in the trading app)."""
    view = [f"view_{m}" for m in TRADING_MODELS]
    operator = view + ["operate_kernel", "engage_halt"]
    # Releases (issue 11): an Operator may canary and shadow (a reload, operate_kernel); Risk
    # promotes a version to every slot and reloads the whole fleet at once.
    risk = operator + ["release_halt", "rollback_strategy", "configure_slot", "promote_strategy", "deploy_fleet"]
    return {ROLE_VIEWER: view, ROLE_OPERATOR: operator, ROLE_RISK: risk}


def _roles_setup(group_model, permission_model, *, strict: bool = False) -> None:
    """``strict``: every permission must exist. A migration runs it on the historical models,
    where permissions a later migration adds do not exist yet (0003 before 0006's): it grants
    those that exist, and the later migration runs it again."""
    for role, codenames in role_permissions().items():
        perms = list(permission_model.objects.filter(content_type__app_label="trading", codename__in=codenames))
        missing = set(codenames) - {p.codename for p in perms}
        if missing and strict:
            raise ServiceError(f"permissions missing (run migrate first): {', '.join(sorted(missing))}")
        group, _ = group_model.objects.get_or_create(name=role)
        group.permissions.set(perms)


@transaction.atomic
def roles_setup() -> None:
    """Groups Viewer, Operator and Risk with exactly their permissions; idempotent."""
    _roles_setup(Group, Permission, strict=True)
