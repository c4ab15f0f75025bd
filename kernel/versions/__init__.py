"""Strategy versions: load beside the old one, check, swap under the reload lock.

- ``generations``: each load is a fresh synthetic package, compiled from the source it hashed,
  of regular files physically inside the strategies folder only (never a symlink, FIFO, device);
- ``import_rules``: what a strategy may import and call: an allowlist, with explicit opt-ins;
- ``version``: ``StrategyVersion``, a loaded version and its content hash;
- ``loader``: ``StrategyLoader``, a strategy as a new generation, its interface checked;
- ``statelessness``: the state a strategy must not keep: everything its modules reach (globals,
  helpers, classes, instances, function defaults/attributes, closure cells), watched;
- ``checks``: the checks before publication (params, smoke evaluation in a budget, statelessness);
- ``registry``: ``StrategyRegistry``, pin / swap / rollback under the reload lock.

The names below are the ones imported from ``kernel.versions`` elsewhere.
"""
from __future__ import annotations

from .checks import SmokeSample, check_version, migrate, run_evaluate
from .generations import GEN_PREFIX
from .loader import StrategyLoader
from .registry import StrategyRegistry
from .statelessness import module_state_fingerprint
from .version import StrategyVersion

__all__ = [
    "GEN_PREFIX",
    "SmokeSample",
    "StrategyLoader",
    "StrategyRegistry",
    "StrategyVersion",
    "check_version",
    "migrate",
    "module_state_fingerprint",
    "run_evaluate",
]
