"""The console's service layer: the one place where state changes.

The admin, the API, kernelctl, the management commands and the Celery tasks translate a
request into one call here. Every function is keyword-only, typed and named
``<thing>_<verb>``; the ones that write are atomic. The kernel is reached only through its
control plane (kernel.control_client / kernel.control): commands and the halt are written
into the kernel's control.json, outcomes are read back from its status.json by
:func:`status_sync`.

One module per sub-domain, imported in this order (each imports only those before it):
errors, command_feedback (a command's outcome in the operator's words), notification_channels
(where a message can go, one try of sending it), actors, timestamps, permissions, audit,
notification_events (what in a new status.json is worth telling a human), kernel_records,
audit_spool, routing, host_kernels (what a task message may ask of this host), task_queue (the
one module that enqueues Celery tasks, by name), notifications (deliveries: retried, rate-limited,
audited), command_records,
command_delivery, halt_delivery, status_mirror, redelivery, kernels (registration and the
status sync), local_mirrors (this machine's mirrors synced if stale, before a page reads them),
command_wait, commands (issuing, one or many, by row or by state dir), halts,
slots, releases (rollback to a version, canary, shadow, promote, abort, a fleet-wide reload);
nothing else needs tokens and roles.

Two rules shape the layer:

- **Halt never waits on the database.** :func:`halt_engage` writes control.json first and
  only then records the halt; if the database is down or locked, the audit event goes to
  a local spool file (one fsynced JSON line per event) that :func:`audit_spool_flush`
  writes to the database later, exactly once (each spooled event carries a dedupe key).
- **Each kernel outcome is audited exactly once.** Outcomes carry an
  ``AuditEvent.dedupe_key`` derived from what the kernel reported, so running
  :func:`status_sync` any number of times, in any number of processes, records each once.
"""
from __future__ import annotations

from .actors import Actor
from .audit import audit_record, audit_verify
from .audit_spool import audit_spool, audit_spool_path
from .command_delivery import command_deliver, command_deliver_on_host
from .command_records import (
    COMMAND_TTL_S,
    MAX_DELIVERY_ATTEMPTS,
    REDELIVER_AFTER_S,
    command_expire,
    commands_expire_due,
)
from .command_wait import command_refresh, command_wait
from .commands import (
    CommandsIssued,
    command_dispatch,
    command_issue,
    command_issue_for_state_dir,
    command_issue_offline,
    commands_issue_many,
)
from .errors import Conflict, NotAllowed, NotFound, ServiceError, Unavailable
from .halts import halt_deliver, halt_engage, halt_release, halt_wait
from .host_kernels import TaskNotYet, TaskRefused, host_kernels, task_args_check, task_refuse
from .kernel_records import kernel_name_for_dir, kernel_stale_check
from .kernels import (
    audit_spool_flush,
    host_sync,
    kernel_for_state_dir,
    kernel_register,
    kernels_sync,
    status_sync,
    status_sync_if_stale,
)
from .local_mirrors import local_kernels_sync_if_stale
from .permissions import required_permission
from .roles import ROLE_OPERATOR, ROLE_RISK, ROLE_VIEWER, TRADING_MODELS, role_permissions, roles_setup
from .roles import _roles_setup  # noqa: F401 - migrations 0003_roles and 0006 run it on the historical models
from .routing import halt_queue, kernel_is_local
from .slots import slot_configure
from .releases import (
    FleetKernel,
    FleetReload,
    fleet_kernels,
    fleet_reload,
    release_abort,
    release_canary,
    release_promote,
    release_rollback,
    release_shadow,
)
from .status_mirror import EQUITY_SAMPLE_EVERY_S
from .tokens import (
    TOKEN_PREFIX,
    TOKEN_TOUCH_EVERY_S,
    TokensRevoked,
    token_authenticate,
    token_create,
    token_revoke,
    tokens_revoke,
)

__all__ = [
    "Actor",
    "ServiceError",
    "NotAllowed",
    "NotFound",
    "Conflict",
    "Unavailable",
    "required_permission",
    "command_issue",
    "command_issue_offline",
    "command_issue_for_state_dir",
    "commands_issue_many",
    "CommandsIssued",
    "command_dispatch",
    "command_deliver",
    "command_deliver_on_host",
    "TaskRefused",
    "TaskNotYet",
    "task_refuse",
    "task_args_check",
    "host_kernels",
    "command_expire",
    "commands_expire_due",
    "command_wait",
    "command_refresh",
    "halt_engage",
    "halt_deliver",
    "halt_release",
    "halt_wait",
    "halt_queue",
    "slot_configure",
    "release_rollback",
    "release_canary",
    "release_shadow",
    "release_promote",
    "release_abort",
    "fleet_reload",
    "fleet_kernels",
    "FleetReload",
    "FleetKernel",
    "status_sync",
    "status_sync_if_stale",
    "local_kernels_sync_if_stale",
    "host_sync",
    "kernels_sync",
    "kernel_is_local",
    "kernel_stale_check",
    "kernel_register",
    "kernel_for_state_dir",
    "kernel_name_for_dir",
    "audit_record",
    "audit_verify",
    "audit_spool",
    "audit_spool_path",
    "audit_spool_flush",
    "token_create",
    "token_revoke",
    "tokens_revoke",
    "TokensRevoked",
    "token_authenticate",
    "role_permissions",
    "roles_setup",
    "ROLE_VIEWER",
    "ROLE_OPERATOR",
    "ROLE_RISK",
    "TRADING_MODELS",
    "COMMAND_TTL_S",
    "EQUITY_SAMPLE_EVERY_S",
    "REDELIVER_AFTER_S",
    "MAX_DELIVERY_ATTEMPTS",
    "TOKEN_TOUCH_EVERY_S",
    "TOKEN_PREFIX",
]
