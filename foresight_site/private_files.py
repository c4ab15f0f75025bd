"""The console's own files are private to the service user from the moment they exist.

Created with their final mode (a folder 0700, a file 0600), never opened up and chmod-ed
after: between the two a local user could open the file and keep the descriptor.
trading/checks.py refuses to start (production) or warns (development) when one is not.
"""
from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: str | Path) -> Path:
    """``path`` as a folder only its owner may enter (made if missing; an existing one is
    left as it is, for the check to judge)."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return path


def private_file(path: str | Path) -> Path:
    """``path`` as an empty file only its owner may read (made if missing, never truncated).

    For the SQLite database: SQLite creates a missing file 0644, and its -wal and -shm files
    with the database file's mode, so making the (empty, valid) database file 0600 first makes
    all three private."""
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return path
    os.close(fd)
    return path
