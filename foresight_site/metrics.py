"""The console's Prometheus metrics: requests (a middleware), and what its database says
(trading/metrics_reads.py), served at ``/metrics``.

prometheus-client rather than django-prometheus: the console needs three families of its
own (requests by view, command delivery latency, audit events) and an access rule on the
endpoint; django-prometheus brings database and cache wrappers it does not need and an
endpoint open to whoever reaches it.

Who may scrape: a client whose address (trading/client_ip.py: the real one behind a trusted
proxy) is loopback, or anyone sending ``Authorization: Bearer $FORESIGHT_METRICS_TOKEN``
when that is set. A loopback peer that forwards for someone (an X-Forwarded-For from a proxy
not named in FORESIGHT_TRUSTED_PROXIES) is refused: that is the internet behind a local proxy.

Several gunicorn workers: set PROMETHEUS_MULTIPROC_DIR to an empty folder before the server
starts, and every worker's request counts are summed in each scrape (docs/monitoring.md).
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import time
from typing import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from trading.client_ip import client_ip, clean_ip, peer_is_trusted_proxy
from trading.metrics_reads import ConsoleDatabaseMetrics

__all__ = ["REGISTRY", "RequestMetrics", "metrics_view", "metrics_allowed"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REGISTRY = CollectorRegistry(auto_describe=True)
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("foresight_console_requests", "HTTP requests answered, by view, method and status",
                   ["view", "method", "status"], registry=REGISTRY)
REQUEST_DURATION = Histogram("foresight_console_request_duration_seconds", "Time to answer a request, by view",
                             ["view"], buckets=_BUCKETS, registry=REGISTRY)
REGISTRY.register(ConsoleDatabaseMetrics())


def _view_name(request: HttpRequest) -> str:
    """The resolved view's name (bounded: one per URL pattern), never the raw path."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "<unresolved>"
    return match.view_name or match.route or "<unnamed>"


class RequestMetrics:
    """Counts every response, whichever middleware or view made it (first in MIDDLEWARE)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        start = time.perf_counter()
        response = self.get_response(request)
        view = _view_name(request)
        REQUESTS.labels(view, request.method or "?", str(response.status_code)).inc()
        REQUEST_DURATION.labels(view).observe(time.perf_counter() - start)
        return response


def metrics_allowed(request: HttpRequest) -> bool:
    token = getattr(settings, "FORESIGHT_METRICS_TOKEN", "") or ""
    sent = request.META.get("HTTP_AUTHORIZATION", "")
    if token and sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].strip().encode(), token.encode()):
        return True
    peer = clean_ip(request.META.get("REMOTE_ADDR"))
    if request.META.get("HTTP_X_FORWARDED_FOR") and not peer_is_trusted_proxy(peer):
        return False  # a local proxy we were not told about: the client is elsewhere
    address = client_ip(request)
    return address is not None and ipaddress.ip_address(address).is_loopback


def _exposition() -> bytes:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess  # only with the env set: it reads that folder

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        merged.register(ConsoleDatabaseMetrics())
        return generate_latest(merged)
    return generate_latest(REGISTRY)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: Prometheus' text format, to loopback clients or the token's holder."""
    if not metrics_allowed(request):
        return HttpResponse("metrics are served to loopback clients or with FORESIGHT_METRICS_TOKEN\n",
                            status=403, content_type="text/plain; charset=utf-8")
    return HttpResponse(_exposition(), content_type=CONTENT_TYPE_LATEST)
