"""The kernel's one error vocabulary.

Each name says what the operator (or the calling code) must do about it, in the
spirit of freqtrade's ``TemporaryError`` / ``OperationalException`` split:
retry the first kind within a deadline, never retry the ones that mean "this
order / this code / this configuration is wrong".
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pydantic import ValidationError

__all__ = [
    "KernelError",
    "TemporaryError",
    "OrderRejected",
    "AuthenticationFailed",
    "OrderNotFound",
    "GateRefused",
    "StrategyFault",
    "ReloadFailed",
    "BadCommand",
    "OperationalError",
    "format_validation_error",
]


class KernelError(Exception):
    """Base of every error the kernel raises on purpose."""


class TemporaryError(KernelError):
    """A transient failure (network, rate limit, busy store): retry within the deadline."""


class OrderRejected(KernelError):
    """The broker refused this order (insufficient funds, invalid order): report it on the slot, do not retry."""


class AuthenticationFailed(KernelError):
    """The broker refused our credentials: pause the slot loudly until someone fixes the keys."""


class OrderNotFound(KernelError):
    """The broker does not know this order."""


class GateRefused(KernelError):
    """The order gate refused an order (halt, deadline, risk limit).

    ``reason`` is a short machine-readable code (``"halt"``, ``"deadline"``,
    ``"risk:max_notional"``...); ``str(err)`` is the human message.
    """

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message or reason

    def __reduce__(self):  # keep ``reason`` across pickling (process pools, queues)
        return (type(self), (self.reason, self.message))


class StrategyFault(KernelError):
    """A strategy raised, hung past its deadline, or mutated module-level state."""


class ReloadFailed(KernelError):
    """A new strategy version failed its checks; ``stage`` says which one (import, interface, params, smoke, budget...)."""

    def __init__(self, stage: str, message: str = "") -> None:
        super().__init__(message or stage)
        self.stage = stage
        self.message = message or stage

    def __reduce__(self):
        return (type(self), (self.stage, self.message))


class BadCommand(KernelError):
    """A control command was invalid; the message is shown to the operator as the command's result."""


class OperationalError(KernelError):
    """Trading must stop: the kernel is misconfigured or its own state is inconsistent."""


def format_validation_error(exc: "ValidationError") -> str:
    """A pydantic error in one line an operator can act on: the first three problems,
    each as ``field.path: message``."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)
