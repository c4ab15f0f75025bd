"""What a kernel's mirrored status.json says of its strategies' releases (issue 11): pure
reads of ``Kernel.status``, shared by the release services and the release reads."""
from __future__ import annotations

from typing import Any

from .models import Kernel

# A canary that ended (rolled back, automatically or not, or promoted) stays in status.json a
# while with its state: it no longer runs.
ENDED = ("auto_rolled_back", "rolled_back", "promoted", "aborted", "discarded", "ended")


def strategy_state(kernel: Kernel, strategy: str) -> dict[str, Any]:
    """``status.json`` ``strategies[strategy]`` as the console last mirrored it ({} if none)."""
    entry = ((kernel.status or {}).get("strategies") or {}).get(strategy)
    return entry if isinstance(entry, dict) else {}


def release_active(entry: Any) -> bool:
    """Does this canary/shadow entry of status.json still run?"""
    return isinstance(entry, dict) and bool(entry) and entry.get("state") not in ENDED and not entry.get("ended_at")


def running_release(kernel: Kernel, strategy: str) -> tuple[str, dict[str, Any]] | None:
    """("canary" | "shadow", its status entry) if one of ``strategy`` runs on ``kernel``."""
    state = strategy_state(kernel, strategy)
    for kind in ("canary", "shadow"):
        if release_active(state.get(kind)):
            return kind, state[kind]
    return None
