"""Drift: does the strategies folder still hold the code that runs?

After a restart the kernel runs what the release store holds, whatever the working tree
says (kernel/release_store.py); status.json reports, per strategy, the sha256 the working
tree's copies of the running version's files would make, and whether it differs. Nothing
changes until an operator reloads. Only read and hashed, never imported; a file is hashed
again only when its (inode, mtime, size) changed.
"""
from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any

from .errors import ReloadFailed
from .versions.generations import read_strategy_file
from .versions.version import StrategyVersion, version_sha

__all__ = ["WorkingTree"]

RACY_NS = 2_000_000_000


class WorkingTree:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._cache: dict[str, tuple[tuple[int, int, int], str]] = {}

    def _file_sha(self, name: str) -> str | None:
        try:
            st = os.lstat(self.folder / name)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        try:
            sha = hashlib.sha256(read_strategy_file(self.folder, name)).hexdigest()
        except ReloadFailed:
            return None
        if time.time_ns() - st.st_mtime_ns > RACY_NS:
            # A file rewritten within the timestamp's granularity can keep its (mtime, size):
            # cached only once it is old enough that a rewrite would show (git's "racy" rule).
            self._cache[name] = (key, sha)
        return sha

    def describe(self, version: StrategyVersion) -> dict[str, Any]:
        """``{"sha256": <the working tree's>, "differs": bool}``; sha256 None when one of the
        running version's files is missing or not a regular file there."""
        files = {}
        for name in version.files:
            sha = self._file_sha(name)
            if sha is None:
                return {"sha256": None, "differs": True}
            files[name] = sha
        tree = version_sha(files)
        return {"sha256": tree, "differs": tree != version.sha256}
