"""The strategy loader: imports a strategy as a fresh generation and checks its interface.

Only regular files physically inside the folder count (generations.py): a symlink, a FIFO,
a device or a directory named like a strategy *exists* (so that a reload, a slot.add or a
slot.configure naming it fails with the reason) but never loads, and nothing of it runs."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

from ..errors import ReloadFailed
from ..protocol import STRATEGY_RE, utcnow_iso
from ..strategy_api import StrategyParams
from .generations import (Generation, generation_drop, generation_open, not_regular, read_strategy_file,
                          strategy_file_kind)
from .version import StrategyVersion, version_sha


class StrategyLoader:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()

    def exists(self, name: str) -> bool:
        """Is there something at ``<name>.py`` (never followed if a symlink)? ``load`` says
        whether it is a regular file that loads."""
        return bool(STRATEGY_RE.match(name)) and strategy_file_kind(self.folder / f"{name}.py") != "missing"

    def available(self) -> list[str]:
        """Modules of the folder that define ``evaluate`` (helpers such as indicators do not);
        regular files only."""
        out = []
        for p in self.folder.glob("*.py"):
            if not STRATEGY_RE.match(p.stem) or strategy_file_kind(p) != "file":
                continue
            try:
                tree = ast.parse(read_strategy_file(self.folder, p.name).decode("utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, ReloadFailed):
                out.append(p.stem)  # broken, but meant as a strategy: reloading it reports why
                continue
            if any(isinstance(n, ast.FunctionDef) and n.name == "evaluate" for n in tree.body):
                out.append(p.stem)
        return sorted(out)

    def load(self, name: str, number: int, *, folder: Path | None = None) -> StrategyVersion:
        """Import ``name`` as a fresh generation and check its interface. Raises
        ReloadFailed (with .stage) and leaves nothing behind on failure.

        ``folder``: another folder of sources to compile from instead of the strategies
        folder (a release store entry, kernel/release_store.py), under the very same rules:
        regular files only, the import allowlist, the statelessness checks."""
        if not STRATEGY_RE.match(name):
            raise ReloadFailed("name", f"{name!r} is not a strategy name (a-z, 0-9, _)")
        folder = Path(folder) if folder is not None else self.folder
        kind = strategy_file_kind(folder / f"{name}.py")
        if kind == "missing":
            raise ReloadFailed("name", f"no strategy {name!r} in {folder}")
        if kind != "file":
            raise not_regular(folder, f"{name}.py", kind)
        gen = generation_open(folder=folder)
        package = gen.package
        try:
            try:
                module = importlib.import_module(f"{package}.{name}")
            except ReloadFailed:
                raise  # a file that is not a regular one, state certain from the source
            except SyntaxError as exc:
                raise ReloadFailed("import", f"syntax error in {Path(exc.filename or '').name}:{exc.lineno}: {exc.msg}") from exc
            except ImportError as exc:
                raise ReloadFailed("import", f"import failed: {exc}") from exc
            except BaseException as exc:  # noqa: BLE001 - any exception at import time
                raise ReloadFailed("import", f"exception at import: {type(exc).__name__}: {exc}") from exc
            version = self._interface(name, number, package, module, gen)
        except BaseException:
            generation_drop(package=package)
            raise
        return version

    @staticmethod
    def _interface(name, number, package, module, gen: Generation) -> StrategyVersion:
        evaluate = getattr(module, "evaluate", None)
        if not callable(evaluate):
            raise ReloadFailed("interface", f"{name} has no evaluate(ctx) function")
        params_model = getattr(module, "Params", None)
        if not (isinstance(params_model, type) and issubclass(params_model, StrategyParams)):
            raise ReloadFailed("interface", f"{name}.Params must be a subclass of kernel.strategy_api.StrategyParams")
        warmup = getattr(module, "warmup", None)
        if warmup is not None and not callable(warmup):
            raise ReloadFailed("interface", f"{name}.warmup must be a function")
        schema = getattr(module, "STATE_SCHEMA", 1)
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise ReloadFailed("interface", f"{name}.STATE_SCHEMA must be an int")
        migrate = getattr(module, "migrate_state", None)
        if migrate is not None and not callable(migrate):
            raise ReloadFailed("interface", f"{name}.migrate_state must be a function")
        files = dict(gen.files)
        return StrategyVersion(
            name=name,
            number=number,
            sha256=version_sha(files),
            files=files,
            loaded_at=utcnow_iso(),
            package=package,
            module=module,
            modules=list(gen.modules),
            params_model=params_model,
            evaluate=evaluate,
            warmup_fn=warmup,
            state_schema=schema,
            migrate_state=migrate,
            opt_ins={f: d for f, d in gen.opt_ins.items() if d},
            sources=dict(gen.sources),
        )
