"""A fixture for console tests that run with real transactions (``live_server``,
``django_db(transaction=True)``).

After such a test pytest-django empties the database with a flush, which the audit log's
append-only triggers (trading/migrations/0002) refuse. ``audit_log_flushable`` empties that
one table first, with the triggers lifted for that statement only, and puts them back.
"""
from __future__ import annotations

import importlib

import pytest
from django.db import connection

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
        for sql in create:
            cursor.execute(sql)
