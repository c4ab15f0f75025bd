"""File modes in tests of the state dir's files: a umask set for a block, a private file."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process's umask is ``mask`` inside the block, and what it was after."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def private_file(folder: Path, text: str = "secret", name: str = "private") -> Path:
    """``folder/name`` holding ``text``, mode 0600: what a symlink must never expose."""
    target = folder / name
    target.write_text(text)
    target.chmod(0o600)
    return target
