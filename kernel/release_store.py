"""The release store: every strategy version that passed its checks, kept in the state dir
before it goes live, content-addressed.

``DIR/versions/<sha256>/`` holds the exact source files the version was compiled from and a
``manifest.json`` (strategy, sha256, per-file sha256, number, first loaded at, by whom, by
which command id, the git commit of the strategies folder when it is a clean git work tree,
else "uncommitted"). An entry is written whole or not at all: a temporary folder in
``versions/``, every file fsynced, the folder fsynced, renamed to its name, ``versions/``
fsynced. A temporary folder left by a ``kill -9`` is never read and is removed when the
kernel opens the store. An entry whose files no longer hash to its name is refused and
reported, never loaded.

Version numbers name one code forever: per strategy, the first time a sha256 is published it
gets the next number, kept in the ledger's meta (``version_numbers``) and in the manifest.
Which version runs (and which ran before it) is kept in the ledger's meta too
(``release_current``): a restart resumes exactly that, compiled from the store.

The functions at the top only read: kernelctl (``versions``, ``diff``) uses them beside a
running kernel; :class:`ReleaseStore` is the kernel's writer.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterable

from .errors import ReloadFailed
from .ledger import Ledger
from .protocol import utcnow_iso
from .versions.generations import read_strategy_file, strategy_file_kind
from .versions.version import StrategyVersion, version_sha

__all__ = ["MANIFEST", "VERSIONS_DIR", "ReleaseStore", "entry_verify", "store_diff", "store_list", "store_resolve"]

VERSIONS_DIR = "versions"
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
DEFAULT_KEEP = 20
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_FILE_RE = re.compile(r"^[a-z_][a-z0-9_]*\.py$")
NUMBERS_KEY = "version_numbers"  # ledger meta: {strategy: {sha256: number}}
CURRENT_KEY = "release_current"  # ledger meta: {strategy: {"sha256": ..., "previous": sha256 | None}}


# ------------------------------------------------------------------ reading (kernel and kernelctl)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def entry_verify(root: Path, sha: str) -> dict[str, Any]:
    """The manifest of the entry ``sha``, once every file in it hashes to what the manifest
    says and the files hash to ``sha``. Raises ReloadFailed("store") with the reason otherwise
    (nothing of the entry is executed to find out)."""
    short = sha[:12]
    if not _SHA_RE.match(sha):
        raise ReloadFailed("store", f"{sha!r} is not a sha256")
    entry = Path(root) / sha
    kind = strategy_file_kind(entry)
    if kind != "directory":
        raise ReloadFailed("store", f"stored version {short} is missing from {root}" if kind == "missing"
                           else f"stored version {short} is a {kind}, not a folder: refused")
    try:
        manifest = json.loads(read_strategy_file(entry, MANIFEST).decode("utf-8"))
    except (ReloadFailed, ValueError, UnicodeDecodeError) as exc:
        raise ReloadFailed("store", f"stored version {short} has no readable manifest: {exc}") from exc
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files or manifest.get("sha256") != sha:
        raise ReloadFailed("store", f"stored version {short}: its manifest does not describe it")
    for name, want in files.items():
        if not isinstance(name, str) or not _FILE_RE.match(name):
            raise ReloadFailed("store", f"stored version {short}: {name!r} is not a strategy file name")
        try:
            got = hashlib.sha256(read_strategy_file(entry, name)).hexdigest()
        except ReloadFailed as exc:
            raise ReloadFailed("store", f"stored version {short} is corrupt: {exc}") from exc
        if got != want:
            raise ReloadFailed("store", f"stored version {short} is corrupt: {name} no longer hashes to "
                                        "its manifest; refused (never loaded)")
    if version_sha(files) != sha:
        raise ReloadFailed("store", f"stored version {short} is corrupt: its files do not hash to its name")
    return manifest


def _manifest_quick(entry: Path) -> dict[str, Any] | None:
    try:
        m = json.loads(read_strategy_file(entry, MANIFEST).decode("utf-8"))
    except (ReloadFailed, ValueError, UnicodeDecodeError):
        return None
    return m if isinstance(m, dict) else None


def store_list(root: Path, strategy: str | None = None, *, verify: bool = False) -> list[dict[str, Any]]:
    """Manifests of the store (of one strategy), oldest number first. ``verify``: each entry is
    checked; a corrupt one is listed with ``corrupt`` (the reason). Temporary folders are skipped."""
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for entry in sorted(root.iterdir()):
        if not _SHA_RE.match(entry.name):
            continue
        m = _manifest_quick(entry)
        if m is None:
            out.append({"sha256": entry.name, "strategy": None, "number": None, "corrupt": "no readable manifest"})
            continue
        if strategy is not None and m.get("strategy") != strategy:
            continue
        if verify:
            try:
                entry_verify(root, entry.name)
            except ReloadFailed as exc:
                m = {**m, "corrupt": str(exc)}
        out.append(m)
    return sorted(out, key=lambda m: (m.get("strategy") or "", m.get("number") or 0))


def store_resolve(root: Path, strategy: str, ref: Any, *, kind: str | None = None) -> dict[str, Any]:
    """The manifest a reference names: a number (int or digits, optionally ``v3``) or a sha256
    (or a unique prefix of at least 6 hex digits); ``kind`` ("number", "sha256") says which,
    else it is guessed. ReloadFailed("store") if none or several."""
    entries = [m for m in store_list(root, strategy) if m.get("strategy") == strategy]
    text = str(ref).strip().lower()
    if isinstance(ref, bool) or (kind == "number" and not isinstance(ref, int)) or \
            (kind == "sha256" and not isinstance(ref, str)):
        raise ReloadFailed("store", f"{ref!r} is not a version {kind or 'number or sha256'}")
    if kind != "sha256" and (isinstance(ref, int) or re.fullmatch(r"v?\d{1,9}", text)):
        number = int(text.lstrip("v"))
        found = [m for m in entries if m.get("number") == number]
        if not found:
            raise ReloadFailed("store", f"no stored version {number} of {strategy}")
        return found[0]
    if not re.fullmatch(r"[0-9a-f]{6,64}", text):
        raise ReloadFailed("store", f"{ref!r} is neither a version number nor a sha256 (prefix of 6+ hex digits)")
    found = [m for m in entries if str(m.get("sha256", "")).startswith(text)]
    if not found:
        raise ReloadFailed("store", f"no stored version of {strategy} with sha256 {text[:12]}")
    if len(found) > 1:
        raise ReloadFailed("store", f"sha256 prefix {text} names {len(found)} stored versions of {strategy}")
    return found[0]


def store_diff(root: Path, strategy: str, a: Any, b: Any) -> str:
    """A unified diff of two stored versions (per file, in file name order)."""
    ma, mb = store_resolve(root, strategy, a), store_resolve(root, strategy, b)
    entry_verify(root, ma["sha256"])
    entry_verify(root, mb["sha256"])
    out: list[str] = []
    for name in sorted(set(ma["files"]) | set(mb["files"])):
        texts = []
        for m in (ma, mb):
            if name in m["files"]:
                texts.append(read_strategy_file(Path(root) / m["sha256"], name).decode("utf-8").splitlines(True))
            else:
                texts.append([])
        out.extend(difflib.unified_diff(
            texts[0], texts[1], fromfile=f"v{ma['number']}/{name}", tofile=f"v{mb['number']}/{name}"))
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def git_commit(folder: Path) -> str:
    """The HEAD commit of ``folder``'s git work tree when nothing under ``folder`` differs from
    it, else "uncommitted" (also when git or a work tree is missing)."""
    try:
        run = dict(cwd=folder, capture_output=True, text=True, timeout=10)
        head = subprocess.run(["git", "rev-parse", "HEAD"], **run)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], **run)
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"
    if head.returncode != 0 or dirty.returncode != 0 or dirty.stdout.strip():
        return "uncommitted"
    return head.stdout.strip()


# ------------------------------------------------------------------ the kernel's store


class ReleaseStore:
    """The kernel's writer of ``DIR/versions`` and keeper of version numbers (one kernel per
    state dir holds it: kernel/state_dir_lock.py)."""

    def __init__(self, state_dir: Path, *, ledger: Ledger, strategies_dir: Path, keep: int = DEFAULT_KEEP) -> None:
        self.root = Path(state_dir) / VERSIONS_DIR
        self.root.mkdir(mode=0o700, exist_ok=True)
        self._ledger = ledger
        self._strategies_dir = Path(strategies_dir)
        self.keep = keep
        self._lock = threading.RLock()
        self.cleaned = self._clean_partial()
        numbers: dict[str, dict[str, int]] = {k: dict(v) for k, v in (ledger.meta_get(NUMBERS_KEY) or {}).items()}
        for m in store_list(self.root):  # an entry renamed in before its number reached the ledger
            if m.get("strategy") and isinstance(m.get("number"), int):
                numbers.setdefault(m["strategy"], {}).setdefault(m["sha256"], m["number"])
        self._numbers = numbers

    def _clean_partial(self) -> list[str]:
        """Remove what a kill -9 mid-store left: temporary folders, never used."""
        gone = []
        for entry in self.root.iterdir():
            if entry.name.startswith(TMP_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
                gone.append(entry.name)
        if gone:
            _fsync_dir(self.root)
        return gone

    # -------------------------------------------------------------- numbers

    def number_for(self, name: str, sha: str) -> int:
        """The number ``sha`` has, or the one it will get when published (the next one)."""
        with self._lock:
            known = self._numbers.get(name, {})
            return known.get(sha) or max(known.values(), default=0) + 1

    # -------------------------------------------------------------- current versions

    def current(self) -> dict[str, dict[str, Any]]:
        return dict(self._ledger.meta_get(CURRENT_KEY) or {})

    def mark_current(self, name: str, sha: str, previous: str | None) -> None:
        """Which version runs now (and ran before it): what a restart resumes."""
        with self._lock:
            cur = self.current()
            cur[name] = {"sha256": sha, "previous": previous}
            self._ledger.meta_set(**{CURRENT_KEY: cur})

    # -------------------------------------------------------------- entries

    def folder(self, sha: str) -> Path:
        return self.root / sha

    def has(self, sha: str) -> bool:
        return strategy_file_kind(self.folder(sha)) == "directory"

    def verify(self, sha: str) -> dict[str, Any]:
        return entry_verify(self.root, sha)

    def resolve(self, name: str, ref: Any, *, kind: str | None = None) -> dict[str, Any]:
        return store_resolve(self.root, name, ref, kind=kind)

    def put(self, version: StrategyVersion, *, by: str | None, command_id: str | None,
            crash: Any = None) -> dict[str, Any]:
        """Store ``version`` (its number set to the one its sha256 has, or the next) before it
        goes live; the manifest. An entry already there is verified, never rewritten.
        Raises ReloadFailed("store") if the entry cannot be written or is corrupt."""
        with self._lock:
            version.number = self.number_for(version.name, version.sha256)
            if self.has(version.sha256):
                manifest = self.verify(version.sha256)
            else:
                manifest = {
                    "strategy": version.name, "sha256": version.sha256, "files": dict(version.files),
                    "number": version.number, "first_loaded_at": utcnow_iso(), "by": by,
                    "command_id": command_id, "commit": git_commit(self._strategies_dir),
                }
                try:
                    self._write(version, manifest, crash)
                except OSError as exc:
                    raise ReloadFailed("store", f"version {version.sha256[:12]} could not be stored in "
                                                f"{self.root}: {exc}") from exc
            if self._numbers.get(version.name, {}).get(version.sha256) != version.number:
                self._numbers.setdefault(version.name, {})[version.sha256] = version.number
                self._ledger.meta_set(**{NUMBERS_KEY: self._numbers})
            return manifest

    def _write(self, version: StrategyVersion, manifest: dict[str, Any], crash: Any) -> None:
        if set(version.sources) != set(version.files):
            raise OSError(f"the compiled sources of {version.name} are not all known")
        tmp = self.root / f"{TMP_PREFIX}{version.sha256[:16]}-{secrets.token_hex(4)}"
        tmp.mkdir(mode=0o700)
        try:
            items = [(n, version.sources[n]) for n in sorted(version.sources)]
            items.append((MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()))
            for i, (name, data) in enumerate(items):
                fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if i == 0 and crash is not None:
                    crash("store_partial")  # crash tests: a kill -9 with the entry half-written
            _fsync_dir(tmp)
            os.rename(tmp, self.folder(version.sha256))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.root)

    # -------------------------------------------------------------- retention

    def prune(self, *, strategy: str | None, keep: int | None, protected: Iterable[str]) -> dict[str, Any]:
        """Remove stored versions beyond the newest ``keep`` per strategy, except any that is
        ``protected`` (run by a slot, current or previous anywhere, named in the ledger)."""
        keep = self.keep if keep is None else keep
        protected = set(protected)
        for entry in self.current().values():
            protected.update(s for s in (entry.get("sha256"), entry.get("previous")) if s)
        removed, kept = [], []
        with self._lock:
            by_strategy: dict[str, list[dict[str, Any]]] = {}
            for m in store_list(self.root, strategy):
                if m.get("strategy"):
                    by_strategy.setdefault(m["strategy"], []).append(m)
            for name, entries in sorted(by_strategy.items()):
                entries.sort(key=lambda m: m.get("number") or 0, reverse=True)
                for i, m in enumerate(entries):
                    if i < keep or m["sha256"] in protected:
                        kept.append({"strategy": name, "version": m.get("number"), "sha256": m["sha256"]})
                        continue
                    # Renamed out of its name first: a half-removed entry is never taken for one.
                    doomed = self.root / f"{TMP_PREFIX}prune-{m['sha256'][:16]}-{secrets.token_hex(4)}"
                    os.rename(self.folder(m["sha256"]), doomed)
                    shutil.rmtree(doomed, ignore_errors=True)
                    removed.append({"strategy": name, "version": m.get("number"), "sha256": m["sha256"]})
            if removed:
                _fsync_dir(self.root)
        return {"removed": removed, "kept": len(kept), "keep": keep}
