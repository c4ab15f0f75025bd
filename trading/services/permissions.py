"""Which permission each action needs: the same in the admin, the API and the CLI."""
from __future__ import annotations

from kernel.protocol import ACTIONS

from .actors import Actor
from .errors import NotAllowed, ServiceError

_OPERATE = "trading.operate_kernel"
_PERMISSIONS = {
    "start": _OPERATE,
    "stop": _OPERATE,
    "pause": _OPERATE,
    "resume": _OPERATE,
    "reload": _OPERATE,
    "slot.pause": _OPERATE,
    "slot.resume": _OPERATE,
    "slot.flatten": _OPERATE,
    "halt": "trading.engage_halt",
    "release": "trading.release_halt",
    "rollback": "trading.rollback_strategy",
    # Releases (issue 11): a canary or a shadow is a reload (operate_kernel); promote, pruning
    # stored versions and a reload of the whole fleet are Risk's.
    "promote": "trading.promote_strategy",
    "versions.prune": "trading.rollback_strategy",
    "fleet.reload": "trading.deploy_fleet",
    "slot.configure": "trading.configure_slot",
    "slot.add": "trading.configure_slot",
}


def required_permission(action: str) -> str:
    """The permission (``app_label.codename``) an action needs, the same in the admin, API and CLI."""
    try:
        return _PERMISSIONS[action]
    except KeyError:
        raise ServiceError(f"unknown action {action!r}; known: halt, {', '.join(ACTIONS)}") from None


def permission_check(actor: Actor, action: str) -> None:
    """NotAllowed unless ``actor`` may do ``action``; the CLI and the system are trusted
    (they have shell access to the state dir anyway)."""
    perm = required_permission(action)
    if actor.user is not None:
        if not actor.user.has_perm(perm):
            raise NotAllowed(f"{actor.name} may not {action} (needs the {perm.split('.', 1)[1]} permission)")
        return
    if actor.source not in ("cli", "system"):
        raise NotAllowed(f"{action} needs a logged-in user with the {perm.split('.', 1)[1]} permission")
