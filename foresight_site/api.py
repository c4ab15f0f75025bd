"""The Ninja API. Routers live with their app (trading/api.py) and are added here.

Errors are JSON ``{"detail": "..."}`` everywhere: the services' errors carry their status
code (400 bad input, 403 not permitted, 404 unknown, 409 conflict, 503 control plane
unavailable), request validation is 422, authentication 401. Nothing a client can send
is a 500.
"""
import json
import logging

from django.db import DatabaseError
from ninja import NinjaAPI, Schema
from ninja.errors import ValidationError

from trading.api import add_routers
from trading.services import ServiceError

log = logging.getLogger("foresight.api")

api = NinjaAPI(title="Foresight", version="1", urls_namespace="api")


class HealthOut(Schema):
    ok: bool


@api.get("/health", response=HealthOut, auth=None, tags=["health"])
def health(request) -> dict:
    """Liveness of the console process; says nothing about the kernel."""
    return {"ok": True}


@api.exception_handler(ServiceError)
def service_error(request, exc: ServiceError):
    body = {"detail": exc.message}
    if exc.errors:
        body["errors"] = exc.errors
    return api.create_response(request, body, status=exc.status_code)


def _describe(errors: list) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "payload", "query", "path", "filters"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


@api.exception_handler(ValidationError)
def validation_error(request, exc: ValidationError):
    errors = json.loads(json.dumps(exc.errors, default=str))  # a validator's exception in ctx is not JSON
    return api.create_response(request, {"detail": _describe(errors), "errors": errors}, status=422)


@api.exception_handler(DatabaseError)
def database_error(request, exc: DatabaseError):
    log.error("database error in %s %s: %s", request.method, request.path, exc)
    return api.create_response(request, {"detail": "the console's database is unavailable; "
                                                   "a halt still works (it is written to control.json first)"},
                               status=503)


add_routers(api)
