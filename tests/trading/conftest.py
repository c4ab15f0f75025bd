"""Fixtures the console's tests share: the audit spool in a temp file, and kernels the
console knows — one a real ``runkernel`` process on a temp state dir (the demo deployment
at 600× speed, started through tests/support's one launcher), one a bare state dir with no
process behind it; and a database that refuses writes, on SQLite and on PostgreSQL.

These suites run twice in ``make test``: on SQLite, and on a throwaway PostgreSQL
(tests/support/postgres.py sets DATABASE_URL; tests/conftest.py checks it took effect)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection, transaction

from tests.support.kernel_process import KernelProcess, runkernel_args
from trading import services
from trading.models import Kernel, Slot


@pytest.fixture
def spool(tmp_path, settings) -> Path:
    settings.FORESIGHT_AUDIT_SPOOL = str(tmp_path / "audit-spool.jsonl")
    return tmp_path / "audit-spool.jsonl"


@pytest.fixture
def runkernel(tmp_path):
    """Start ``manage.py runkernel --demo --speed 600`` on a fresh state dir (returned once it
    has ticked); killed at teardown."""
    kernels: list[KernelProcess] = []

    def start(name: str = "state") -> Path:
        kernel = KernelProcess(tmp_path / name, runkernel_args(demo=True, speed=600),
                               log_path=tmp_path / f"{name}.log")
        kernels.append(kernel)
        kernel.start()
        return kernel.state_dir

    yield start
    for kernel in kernels:
        kernel.cleanup()


@pytest.fixture
def live_kernel(runkernel, spool) -> Kernel:
    return services.kernel_register(name="demo", state_dir=str(runkernel()))


@pytest.fixture
def idle_kernel(tmp_path, spool) -> Kernel:
    """Known to the console, with no process behind it: commands land in control.json."""
    state_dir = tmp_path / "idle"
    state_dir.mkdir()
    kernel = Kernel.objects.create(name="idle", state_dir=str(state_dir), state="running")
    Slot.objects.create(kernel=kernel, slot_id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="ema_cross",
                        params={"fast": 12, "slow": 26})
    return kernel


@contextmanager
def _writes_refused() -> Iterator[None]:
    if connection.vendor == "postgresql":
        # Read-only can be switched on inside a transaction, and a savepoint's rollback undoes it.
        savepoint = transaction.savepoint()
        with connection.cursor() as cursor:
            cursor.execute("SET transaction_read_only = on")
        try:
            yield
        finally:
            transaction.savepoint_rollback(savepoint)
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA query_only = ON")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA query_only = OFF")


@pytest.fixture
def database_refusing_writes(db) -> Callable[[], AbstractContextManager[None]]:
    """``with database_refusing_writes():`` every write to the database fails inside (a
    read-only connection stands in for a locked or lost database)."""
    return _writes_refused


@pytest.fixture
def wsgi_keeps_test_connection() -> Iterator[None]:
    """For tests that call the WSGI application directly (not Django's test client): Django
    closes "old" database connections at each request's start and end, and on PostgreSQL that
    closes the test's connection, inside its transaction. Django's test client unhooks the
    same handler while it makes a request."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
