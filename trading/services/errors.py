"""The console's refusals: each carries a message for the operator and an HTTP status."""
from __future__ import annotations

from pydantic import ValidationError


class ServiceError(Exception):
    """A request the console refuses; the message is for the operator."""

    status_code = 400

    def __init__(self, message: str, *, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}  # field -> message, for invalid input


class NotAllowed(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Unavailable(ServiceError):
    """The control plane could not be written (state dir missing, lock held): retry or use the CLI."""

    status_code = 503


def invalid_config_error(exc: ValidationError, prefix: str = "") -> ServiceError:
    """A slot configuration pydantic refused, as field -> message (what the admin's form and
    the API's ``errors`` show), every field once."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "config"
        field = f"{prefix}{loc}" if loc != "config" or not prefix else prefix.rstrip(".")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        errors.setdefault(field, msg)
    detail = "; ".join(f"{f}: {m}" for f, m in errors.items())
    return ServiceError(f"invalid slot configuration: {detail}", errors=errors)
