"""Suite-wide fixtures. Nothing Django-specific here: kernel tests run without Django's database."""
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder (where manage.py lives)."""
    return REPO_ROOT
