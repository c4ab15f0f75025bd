"""Suite-wide fixtures. Nothing Django-specific here: kernel tests run without Django's database.

The one exception is which database the console's tests run on. ``make test`` runs them on
SQLite, then again on a throwaway PostgreSQL through tests/support/postgres.py, which sets
``DATABASE_URL`` and ``FORESIGHT_TEST_DATABASE=postgres``. Tests marked ``postgres`` only make
sense there: they are skipped on SQLite, and they run (never skip) in the PostgreSQL run.
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DATABASE_ENV = "FORESIGHT_TEST_DATABASE"


def _engine() -> str:
    from django.conf import settings

    return settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: runs only on PostgreSQL (python -m tests.support.postgres -- ...)")
    wanted = os.environ.get(TEST_DATABASE_ENV, "").strip().lower()
    if wanted and wanted not in ("postgres", "sqlite"):
        raise pytest.UsageError(f"{TEST_DATABASE_ENV}={wanted!r}: use postgres or sqlite")
    if wanted == "postgres" and _engine() != "postgresql":
        raise pytest.UsageError(
            f"{TEST_DATABASE_ENV}=postgres but DATABASE_URL is not PostgreSQL: run the tests through "
            "python -m tests.support.postgres -- python -m pytest ...")


def pytest_report_header(config: pytest.Config) -> str:
    return f"console database: {_engine()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _engine() == "postgresql":
        return
    # PostgreSQL-only tests are not run on SQLite (not skipped: deselected, and counted so);
    # make test runs them in its second pass, on a throwaway PostgreSQL cluster.
    postgres_only = [item for item in items if item.get_closest_marker("postgres")]
    if postgres_only:
        items[:] = [item for item in items if not item.get_closest_marker("postgres")]
        config.hook.pytest_deselected(items=postgres_only)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder (where manage.py lives)."""
    return REPO_ROOT
