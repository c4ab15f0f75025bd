"""A loaded strategy version: its module objects, its content hash and its entry points."""
from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass, field
from typing import Any, Callable

from ..strategy_api import Context, Decision, StrategyParams
from .generations import generation_drop
from .statelessness import ModuleStateWatch, module_state_change, module_state_watch, watch_fingerprint


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
    baseline: str = ""  # fingerprint of the state the version's modules reach, after the checks
    _watch: ModuleStateWatch | None = None  # taken with the baseline
    tainted: str | None = None  # set once a cycle saw its state change
    changed_at: str | None = None  # where state changed first (e.g. "alpha.Counter"), once it did
    opt_ins: dict[str, dict[str, str]] = field(default_factory=dict)  # file -> ALLOW_* declarations
    sources: dict[str, bytes] = field(default_factory=dict)  # file -> the bytes compiled (for the release store)

    def set_baseline(self) -> None:
        """Take the state every later cycle is compared with: everything the version's modules
        reach (kernel/versions/statelessness.py). Raises ReloadFailed("stateless") for state
        that cannot be watched (an iterator at module level, data too large or deep)."""
        self._watch = module_state_watch(self.modules)
        self.baseline = watch_fingerprint(self._watch)

    def state_changed(self) -> bool:
        """Did anything the version's modules reach change since the baseline (a global, a helper
        module, a class attribute, an instance, a function attribute or default, a closure
        cell)? False before a baseline is taken. Sets ``changed_at`` to where."""
        if self._watch is None:
            return False
        where = module_state_change(self._watch)
        if where is None:
            return False
        self.changed_at = self.changed_at or where
        return True

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
