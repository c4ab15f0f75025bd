"""Generations: each load of a strategy is a synthetic package ``_fsgen<N>``.

The package's ``__path__`` is the strategies folder, so ``from .indicators import ema`` in a
strategy resolves to a fresh ``_fsgen<N>.indicators`` too. Nothing is ever
``importlib.reload``-ed: a cycle holding an old version keeps old module objects, whole.
Sources are read once, hashed, and compiled from that very text (never from cached
bytecode, whose (mtime, size) key can be stale for a file rewritten within a second).
"""
from __future__ import annotations

import ast
import hashlib
import importlib.abc
import importlib.machinery
import itertools
import sys
import threading
import types
from pathlib import Path

from .import_rules import check_imports

GEN_PREFIX = "_fsgen"
_gen_counter = itertools.count(1)


class Generation:
    """One load's package: its folder, the files it compiled (name -> sha256 of the text)
    and the modules it created, in import order."""

    def __init__(self, package: str, folder: Path) -> None:
        self.package = package
        self.folder = folder
        self.files: dict[str, str] = {}  # file name -> sha256 of the text compiled
        self.modules: list[types.ModuleType] = []


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
            return None  # sub-packages are not part of the strategy API
        file = gen.folder / f"{rest}.py"
        if not file.is_file():
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin=str(file))

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        fullname = module.__name__
        gen = self.generations[fullname.partition(".")[0]]
        file = Path(module.__spec__.origin)
        raw = file.read_bytes()
        gen.files[file.name] = hashlib.sha256(raw).hexdigest()
        source = raw.decode("utf-8")
        tree = ast.parse(source, filename=str(file))
        check_imports(tree, file.name)
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
