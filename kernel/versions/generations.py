"""Generations: each load of a strategy is a synthetic package ``_fsgen<N>``.

The package's ``__path__`` is the strategies folder, so ``from .indicators import ema`` in a
strategy resolves to a fresh ``_fsgen<N>.indicators`` too. Nothing is ever
``importlib.reload``-ed: a cycle holding an old version keeps old module objects, whole.
Sources are read once, hashed, and compiled from that very text (never from cached
bytecode, whose (mtime, size) key can be stale for a file rewritten within a second).

Only regular files physically inside the folder load: this finder answers for every name
under a generation (no other finder ever looks in the folder: no packages, no compiled
extensions, no bytecode), refuses a symlink, a FIFO, a device or a directory before opening
it, and opens what it reads with O_NOFOLLOW | O_NONBLOCK relative to the folder, checking
it is a regular file on the open descriptor (``read_strategy_file``).
"""
from __future__ import annotations

import ast
import hashlib
import importlib.abc
import importlib.machinery
import itertools
import os
import stat
import sys
import threading
import types
from pathlib import Path

from ..errors import ReloadFailed
from .import_rules import check_source
from .statelessness import check_static_state

GEN_PREFIX = "_fsgen"
_gen_counter = itertools.count(1)


class Generation:
    """One load's package: its folder, the files it compiled (name -> sha256 of the text)
    and the modules it created, in import order."""

    def __init__(self, package: str, folder: Path) -> None:
        self.package = package
        self.folder = folder
        self.files: dict[str, str] = {}  # file name -> sha256 of the text compiled
        self.sources: dict[str, bytes] = {}  # file name -> the very bytes compiled (the release store keeps them)
        self.modules: list[types.ModuleType] = []
        self.opt_ins: dict[str, dict[str, dict[str, str]]] = {}  # file name -> its ALLOW_* declarations


class _GenerationFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``_fsgenN.<module>`` in that generation's folder and compiles it from the
    source text it hashes."""

    def __init__(self) -> None:
        self.generations: dict[str, Generation] = {}
        self._lock = threading.Lock()

    def find_spec(self, fullname, path=None, target=None):
        head, _, rest = fullname.partition(".")
        gen = self.generations.get(head)
        if gen is None or not rest:
            return None
        if "." in rest:
            raise ModuleNotFoundError(f"No module named {fullname!r}: sub-packages are not part of the "
                                      "strategy API", name=fullname)
        file = gen.folder / f"{rest}.py"
        kind = strategy_file_kind(file)
        if kind == "missing":
            # Answered here, never by the path finder: nothing but <name>.py files in the folder loads.
            raise ModuleNotFoundError(f"No module named {fullname!r} ({gen.folder.name}/{rest}.py does not "
                                      "exist)", name=fullname)
        if kind != "file":
            raise not_regular(gen.folder, file.name, kind)
        return importlib.machinery.ModuleSpec(fullname, self, origin=str(file))

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        fullname = module.__name__
        gen = self.generations[fullname.partition(".")[0]]
        file = Path(module.__spec__.origin)
        raw = read_strategy_file(gen.folder, file.name)
        gen.files[file.name] = hashlib.sha256(raw).hexdigest()
        gen.sources[file.name] = raw
        source = raw.decode("utf-8")
        tree = ast.parse(source, filename=str(file))
        gen.opt_ins[file.name] = check_source(tree, file.name)
        check_static_state(tree, file.name)
        module.__file__ = str(file)
        gen.modules.append(module)
        code = compile(tree, str(file), "exec", dont_inherit=True)
        exec(code, module.__dict__)


_finder = _GenerationFinder()
sys.meta_path.insert(0, _finder)


def generation_open(*, folder: Path) -> Generation:
    """A new, empty generation package over ``folder``, registered in sys.modules so
    that importing ``<package>.<name>`` compiles ``folder/<name>.py`` into it."""
    package = f"{GEN_PREFIX}{next(_gen_counter)}"
    gen = Generation(package, folder)
    pkg = types.ModuleType(package)
    pkg.__path__ = [str(folder)]  # type: ignore[attr-defined]
    pkg.__package__ = package
    pkg.__spec__ = importlib.machinery.ModuleSpec(package, None, is_package=True)
    _finder.generations[package] = gen
    sys.modules[package] = pkg
    return gen


def generation_drop(*, package: str) -> None:
    """Forget a generation's modules; code still holding them keeps working."""
    for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
        sys.modules.pop(key, None)
    _finder.generations.pop(package, None)


# ------------------------------------------------------------------ only regular files inside the folder

_KINDS = ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"), (stat.S_ISREG, "file"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "special file")


def strategy_file_kind(path: Path) -> str:
    """"file" (a regular file), "missing", or what else is there ("symlink", "FIFO", "device",
    "directory", ...), never following a symlink."""
    try:
        return _kind(os.lstat(path).st_mode)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable file"


def not_regular(folder: Path, name: str, kind: str) -> ReloadFailed:
    article = "an" if kind[0] in "aeiou" else "a"
    return ReloadFailed("load", f"{folder.name}/{name} is {article} {kind}: only regular files inside "
                                f"{folder.name}/ load")


def read_strategy_file(folder: Path, name: str) -> bytes:
    """The bytes of ``folder/name``, a regular file physically in ``folder``: the folder and the
    file are opened without following symlinks, non-blocking (a FIFO never blocks), and the
    open file is checked to be regular. Raises ReloadFailed("load") otherwise."""
    if "/" in name or name in ("", ".", ".."):
        raise ReloadFailed("load", f"{name!r} is not a file name in {folder.name}/")
    kind = strategy_file_kind(folder / name)
    if kind == "missing":
        raise ReloadFailed("load", f"{folder.name}/{name} does not exist")
    if kind != "file":
        raise not_regular(folder, name, kind)  # refused before any open: opening a device can act
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ReloadFailed("load", f"{folder} cannot be opened as a folder (not a symlink): {exc.strerror}") from exc
    try:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            raise ReloadFailed("load", f"{folder.name}/{name} cannot be opened as a regular file (a symlink?): "
                                       f"{exc.strerror}") from exc
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(folder, name, _kind(st.st_mode))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
