"""GET /api/kernels/{name}'s body, prepared once per mirror state and served as bytes with an
ETag (a 304 to a client that has it).

The whole status.json mirrored in the Kernel row is what makes the endpoint costly: loading
that JSON column, parsing it, validating it into the schema and dumping it again. Per request
only the row *without* the status column is read (the mirror's own fields change with every
sync, so they are its version); the whole row is read, validated and serialized when that
version changes — once per sync per web worker — and the bytes kept for the next requests.

``stale`` (no heartbeat for FORESIGHT_STALE_AFTER_S) depends on the clock, so it is part of the
version too. The ETag is weak (``W/"…"``): the ``sync`` member says what this request's sync
did when it ran one, and is otherwise the "fresh" summary of the mirror's last sync, so two
bodies with one ETag differ only there.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass

from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils.http import parse_etags
from ninja.responses import NinjaJSONEncoder

from . import services
from .console_health import kernel_stale
from .models import Kernel
from .schemas import KernelDetailOut
from .services.errors import NotFound
from .services.kernel_records import status_path
from .services.routing import kernel_is_local

# status_sync_if_stale's own max age: a silent kernel's file is re-read (its pending commands
# redelivered or expired) at least this often by the callers of this endpoint.
SYNC_AT_LEAST_EVERY_S = 1.0

# The row's columns but the mirrored status.json: the version of what the endpoint shows.
_VERSION_FIELDS = tuple(f.attname for f in Kernel._meta.concrete_fields if f.name != "status")


# A raw query: the ORM's compiling of ``defer("status").filter(name=…)`` costs more than
# running it. The raw queryset still converts the columns (datetimes) as the ORM does.
_q = connection.ops.quote_name
_COLUMNS = ", ".join(_q(f.column) for f in Kernel._meta.concrete_fields if f.name != "status")
_ROW_SQL = {key: f"SELECT {_COLUMNS} FROM {_q(Kernel._meta.db_table)} WHERE {_q(key)} = %s" for key in ("name", "id")}


def _mirror_row(key: str, value) -> Kernel | None:
    """The kernel's row without its status column (deferred: loaded if read)."""
    for kernel in Kernel.objects.raw(_ROW_SQL[key], [value]):
        return kernel
    return None


@dataclass(frozen=True)
class PreparedStatus:
    version: tuple
    body: bytes
    etag: str


_prepared: dict[int, PreparedStatus] = {}
_lock = threading.Lock()


def _version(kernel: Kernel) -> tuple:
    return (*(getattr(kernel, f) for f in _VERSION_FIELDS), kernel_stale(kernel))


def fresh_summary(kernel: Kernel) -> dict:
    """What status_sync_if_stale says of a mirror it did not need to sync."""
    synced = kernel.status_synced_at
    return {"kernel": kernel.name, "status": "fresh", "synced_at": synced.isoformat() if synced else None}


def render_status(kernel: Kernel, sync: dict) -> bytes:
    """The endpoint's JSON for a fully loaded row, as ninja renders KernelDetailOut."""
    kernel.sync = sync
    data = KernelDetailOut.from_orm(kernel).model_dump(by_alias=False)
    return json.dumps(data, cls=NinjaJSONEncoder).encode("utf-8")


def prepared_status(kernel: Kernel) -> PreparedStatus:
    """The prepared body of ``kernel`` (a row read without its status column): this worker's
    bytes when the mirror has not moved since, else built from the whole row once."""
    version = _version(kernel)
    prepared = _prepared.get(kernel.pk)
    if prepared is not None and prepared.version == version:
        return prepared
    full = Kernel.objects.get(pk=kernel.pk)  # one read: the version and the status of one row
    body = render_status(full, fresh_summary(full))
    prepared = PreparedStatus(version=_version(full), body=body,
                              etag='W/"%s"' % hashlib.sha256(body).hexdigest()[:32])
    with _lock:
        _prepared[kernel.pk] = prepared
    return prepared


_seen: dict[int, tuple[tuple | None, float]] = {}  # kernel pk -> (status.json's stat, monotonic time of the sync)
_sync_locks: dict[int, threading.Lock] = {}


def _status_stat(kernel: Kernel) -> tuple | None:
    try:
        st = os.stat(status_path(kernel))
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _sync_once(kernel: Kernel) -> dict:
    """services.status_sync_if_stale, once per status.json written (and at least once per
    SYNC_AT_LEAST_EVERY_S) per worker: its threads polling one kernel wait for one sync of a
    new status.json instead of each reading it. The stat is taken before the sync reads the
    file, so a status.json replaced meanwhile is seen as new by the next call."""
    with _lock:
        lock = _sync_locks.setdefault(kernel.pk, threading.Lock())
    with lock:
        seen = _seen.get(kernel.pk)
        stat = _status_stat(kernel)
        # No status.json here: a kernel of another host (its worker mirrors it), whose sync
        # only expires commands; a local kernel's missing file is reported on every call.
        known = stat is not None or not kernel_is_local(kernel)
        if (known and seen is not None and seen[0] == stat
                and time.monotonic() - seen[1] < SYNC_AT_LEAST_EVERY_S):
            return fresh_summary(kernel)
        sync = services.status_sync_if_stale(kernel=kernel, max_age_s=SYNC_AT_LEAST_EVERY_S)
        if known:
            _seen[kernel.pk] = (stat, time.monotonic())
        return sync


def _client_has(request: HttpRequest, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    tags = parse_etags(header)
    opaque = etag.removeprefix("W/")
    return "*" in tags or any(t.removeprefix("W/") == opaque for t in tags)


def status_response(*, request: HttpRequest, name: str) -> HttpResponse:
    """The kernel's mirror and its last status.json, synced first unless synced in the last
    second (services.status_sync_if_stale); 304 when the client's If-None-Match matches."""
    kernel = _mirror_row("name", name)
    if kernel is None:
        raise NotFound(f"no kernel named {name!r}")
    sync = _sync_once(kernel)
    if sync.get("status") != "fresh":  # this request synced: the row moved on
        kernel = _mirror_row("id", kernel.pk)
    prepared = prepared_status(kernel)
    if _client_has(request, prepared.etag):
        response = HttpResponseNotModified()
    elif sync.get("status") == "fresh":
        response = HttpResponse(prepared.body, content_type="application/json")
    else:  # what this request's sync did, said once; the mirror's bytes otherwise
        full = Kernel.objects.get(pk=kernel.pk)
        response = HttpResponse(render_status(full, sync), content_type="application/json")
    response["ETag"] = prepared.etag
    response["Cache-Control"] = "private, no-cache"
    response["Vary"] = "Authorization, Cookie"
    return response
