"""Strategy versions: load beside the old one, check, swap under the reload lock.

- ``generations``: each load is a fresh synthetic package, compiled from the source it hashed;
- ``import_rules``: what a strategy may import;
- ``version``: ``StrategyVersion``, a loaded version and its content hash;
- ``loader``: ``StrategyLoader``, a strategy as a new generation, its interface checked;
- ``statelessness``: the module-level state a strategy must not change;
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
