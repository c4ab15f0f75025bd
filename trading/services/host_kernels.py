"""The kernels this host's worker may touch (FORESIGHT_HOST_KERNELS), and the refusal of a
task message that asks for anything else.

A Celery message is not trusted: whoever can publish to Redis can write one. So a task
carries a command's id or a kernel's name, never a path or an actor; the worker takes the
actor from the row the console wrote, and the state dir from its OWN host's allowlist. The
Kernel row alone is not enough (anyone with the console's database could point it at any
folder): the row must name a kernel of the allowlist, at the allowlist's state dir. A
message that fails any check is refused, logged and audited ("task.refused"), and nothing
is written. Without a broker (tasks run eagerly in the process that wrote the row, no
message exists) and no allowlist configured, the row is used as the console uses it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from kernel.protocol import ID_RE

from ..models import Kernel
from .actors import Actor
from .audit import audit_key, audit_record
from .audit_spool import audit_spool
from .errors import ServiceError
from .routing import tasks_run_here, this_host

log = logging.getLogger("trading.services")


class TaskRefused(ServiceError):
    """A task message this host will not act on (audited as "task.refused")."""


class TaskNotYet(TaskRefused):
    """What the message names is not in the database yet (a halt's row commits just after its
    message leaves): retried, and refused only once the retries are spent."""


def host_kernels() -> dict[str, str]:
    """{kernel name: state dir} this host's worker may write (FORESIGHT_HOST_KERNELS)."""
    return dict(getattr(settings, "FORESIGHT_HOST_KERNELS", None) or {})


def _same_dir(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def host_kernel_dir(*, kernel: Kernel) -> str:
    """The state dir this host writes for ``kernel``: its allowlist entry, which the row
    must agree with. Raises TaskRefused otherwise (the caller audits it)."""
    allowed = host_kernels()
    if not allowed:
        if tasks_run_here():
            return kernel.state_dir
        raise TaskRefused(f"FORESIGHT_HOST_KERNELS is not set on {this_host()}: this worker touches no kernel")
    state_dir = allowed.get(kernel.name)
    if state_dir is None:
        raise TaskRefused(f"kernel {kernel.name!r} is not one of this host's kernels (FORESIGHT_HOST_KERNELS)")
    if not _same_dir(kernel.state_dir, state_dir):
        raise TaskRefused(f"kernel {kernel.name!r} is registered at {kernel.state_dir}, but this host "
                          f"runs it at {state_dir} (FORESIGHT_HOST_KERNELS)")
    return state_dir


def kernel_name_valid(value: Any) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= 64 and value.isascii()
            and value.replace("-", "").replace("_", "").isalnum())


def command_id_valid(value: Any, prefix: str = "") -> bool:
    return isinstance(value, str) and bool(ID_RE.match(value)) and value.startswith(prefix)


def _shown(value: Any) -> Any:
    """What a refused message carried, bounded (the audit row is not a dump of the message)."""
    text = json.dumps(value, default=repr, ensure_ascii=False)
    return value if len(text) <= 500 else text[:500] + "…"


def task_refuse(*, task: str, reason: str, message: dict[str, Any], kernel_name: str = "",
                command_id: str = "") -> str:
    """Log and audit a refused task message; "refused" (what the task returns). Audited once
    per distinct message (a redelivered or retried one is the same event), spooled if the
    database is down."""
    shown = {k: _shown(v) for k, v in message.items()}
    log.error("task %s refused on %s: %s (message: %s)", task, this_host(), reason, shown)
    digest = hashlib.sha256(json.dumps([task, reason, shown], default=repr, sort_keys=True).encode()).hexdigest()
    fields = dict(action="task.refused", actor=Actor.system(), outcome="refused",
                  kernel_name=kernel_name if kernel_name_valid(kernel_name) else "",
                  command_id=command_id if command_id_valid(command_id) else "",
                  payload={"task": task, "reason": reason, "message": shown, "host": this_host()},
                  dedupe_key=audit_key("task.refused", digest[:40]))
    try:
        audit_record(**fields)
    except DatabaseError as exc:
        log.error("task %s: the refusal could not be recorded (%s): spooling it", task, exc)
        audit_spool(**fields)
    return "refused"


def task_args_check(*, extra: tuple, forged: dict[str, Any]) -> None:
    """A task takes exactly its declared arguments: anything more (a path, an actor, a reason
    from an older or forged message) is refused."""
    if extra or forged:
        raise TaskRefused(f"unexpected arguments: {len(extra)} positional, keywords {sorted(forged)}")
