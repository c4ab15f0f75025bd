"""A fixture for console tests that run with real transactions (``live_server``,
``django_db(transaction=True)``).

After such a test pytest-django empties the database with a flush, which the audit log's
append-only triggers (trading/migrations/0002) refuse. ``audit_log_flushable`` empties that
one table first, with the triggers lifted for that statement only, and puts them back.

On PostgreSQL the flush is a TRUNCATE of every table, which a statement trigger refuses even on
an empty table: there the triggers come back only after the flush, from the post_migrate
signal the flush sends when it is done.
"""
from __future__ import annotations

import importlib

import pytest
from django.db import connection, connections
from django.db.models.signals import post_migrate

_APPEND_ONLY = importlib.import_module("trading.migrations.0002_audit_append_only")


@pytest.fixture
def audit_log_flushable(transactional_db):
    yield
    vendor = connection.vendor
    drop = {"sqlite": _APPEND_ONLY.SQLITE_DROP, "postgresql": _APPEND_ONLY.POSTGRES_DROP}.get(vendor, [])
    create = {"sqlite": _APPEND_ONLY.SQLITE, "postgresql": _APPEND_ONLY.POSTGRES}.get(vendor, [])
    with connection.cursor() as cursor:
        for sql in drop:
            cursor.execute(sql)
        cursor.execute("DELETE FROM trading_auditevent")
        if vendor != "postgresql":
            for sql in create:
                cursor.execute(sql)
            return

    def triggers_back(*, using: str = "default", **_: object) -> None:
        post_migrate.disconnect(dispatch_uid=_AFTER_FLUSH)
        with connections[using].cursor() as cursor:
            for sql in create:
                cursor.execute(sql)

    post_migrate.connect(triggers_back, weak=False, dispatch_uid=_AFTER_FLUSH)


_AFTER_FLUSH = "tests.integration.console_db:audit triggers after the flush"
