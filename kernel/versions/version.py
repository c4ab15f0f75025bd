"""A loaded strategy version: its module objects, its content hash and its entry points."""
from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass
from typing import Any, Callable

from ..strategy_api import Context, Decision, StrategyParams
from .generations import generation_drop
from .statelessness import ModuleStateWatch, module_state_changed, module_state_fingerprint, module_state_watch


@dataclass
class StrategyVersion:
    name: str
    number: int
    sha256: str
    files: dict[str, str]
    loaded_at: str
    package: str
    module: types.ModuleType
    modules: list[types.ModuleType]
    params_model: type[StrategyParams]
    evaluate: Callable[[Context], Decision]
    warmup_fn: Callable[[StrategyParams], int] | None
    state_schema: int
    migrate_state: Callable[[dict, int], dict] | None
    baseline: str = ""  # module state fingerprint after the checks
    _watch: ModuleStateWatch | None = None  # taken with the baseline
    tainted: str | None = None  # set once a cycle saw its module state change

    def set_baseline(self) -> None:
        """Take the module state that every later cycle is compared with."""
        self.baseline = module_state_fingerprint(self.modules)
        self._watch = module_state_watch(self.modules)

    def state_changed(self) -> bool:
        """Did module-level state change since the baseline? (False before one is taken.)"""
        if self._watch is None:
            return False
        return module_state_changed(self._watch)

    def warmup(self, params: StrategyParams) -> int:
        if self.warmup_fn is None:
            return 100
        return max(1, min(int(self.warmup_fn(params)), 5000))

    def params(self, raw: dict[str, Any]) -> StrategyParams:
        return self.params_model.model_validate(raw)

    def describe(self) -> dict[str, Any]:
        return {"version": self.number, "sha256": self.sha256}

    def unload(self) -> None:
        """Drop the generation from sys.modules; cycles still holding it keep working."""
        generation_drop(package=self.package)


def version_sha(files: dict[str, str]) -> str:
    """A version's identity: the same sources always make the same version."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest()
