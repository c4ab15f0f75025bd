"""The Ninja API. Routers live with their app (trading/api.py) and are added here.

Errors are JSON ``{"detail": "..."}`` everywhere: the services' errors carry their status
code (400 bad input, 403 not permitted, 404 unknown, 409 conflict, 503 control plane
unavailable), request validation is 422, authentication 401 (an expired or revoked token
says so), a body over DATA_UPLOAD_MAX_MEMORY_SIZE 413, too many calls or bad tokens 429
(with Retry-After). Nothing a client can send is a 500.

Token-authenticated calls are throttled per token owner (ninja's AuthRateThrottle at
FORESIGHT_API_RATE, trading/auth.py); bad tokens are braked per address there too.
"""
import json
import logging
import math

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from ninja import NinjaAPI, Schema
from ninja.errors import Throttled, ValidationError

from trading.api import add_routers
from trading.api_releases import add_routers as add_release_routers
from trading.auth import TokenRateThrottle
from trading.services import ServiceError
from trading.services.tokens import TokenRefused

log = logging.getLogger("foresight.api")

api = NinjaAPI(title="Foresight", version="1", urls_namespace="api", throttle=[TokenRateThrottle()])


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


@api.exception_handler(TokenRefused)
def token_refused(request, exc: TokenRefused):
    response = api.create_response(request, {"detail": exc.message}, status=401)
    response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


@api.exception_handler(Throttled)
def throttled(request, exc: Throttled):
    response = api.create_response(request, {"detail": "too many requests: slow down and retry later"}, status=429)
    if exc.wait is not None:
        response["Retry-After"] = str(max(1, math.ceil(exc.wait)))
    return response


@api.exception_handler(RequestDataTooBig)
def body_too_big(request, exc: RequestDataTooBig):
    # Django raises it when the body is read (an HTML 400 by default); a client of the API
    # deserves JSON and the status that says what is wrong.
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return api.create_response(request, {"detail": f"request body too large (the limit is {limit} bytes)"},
                               status=413)


@api.exception_handler(DatabaseError)
def database_error(request, exc: DatabaseError):
    log.error("database error in %s %s: %s", request.method, request.path, exc)
    return api.create_response(request, {"detail": "the console's database is unavailable; "
                                                   "a halt still works (it is written to control.json first)"},
                               status=503)


add_routers(api)
add_release_routers(api)
