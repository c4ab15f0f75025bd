"""Temp strategies folders (``runkernel --strategies-dir``) that a test may add to and rewrite
without touching the checkout's strategies/."""
from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from kernel.versions import StrategyLoader
from tests.support.checkout import REPO

REPO_STRATEGIES = REPO / "strategies"


def copy_repo_strategies(dest: Path, *, extra: Mapping[str, str] | None = None) -> Path:
    """A copy of strategies/, plus ``extra`` modules (name -> source)."""
    shutil.copytree(REPO_STRATEGIES, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name, source in (extra or {}).items():
        (dest / f"{name}.py").write_text(source, encoding="utf-8")
    return dest


def write_strategies(folder: Path, modules: Mapping[str, str], *, with_repo: Iterable[str] = ()) -> Path:
    """A folder holding ``modules`` (name -> source) and copies of the named repo strategies,
    with every helper module of strategies/ they may import."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source, encoding="utf-8")
    with_repo = list(with_repo)
    for name in with_repo:
        (folder / f"{name}.py").write_text((REPO_STRATEGIES / f"{name}.py").read_text())
    if with_repo:
        # The helpers (indicators, state, ...): every module of strategies/ that is not a strategy.
        strategies = set(StrategyLoader(REPO_STRATEGIES).available())
        for path in REPO_STRATEGIES.glob("*.py"):
            if path.stem not in strategies and path.name != "__init__.py":
                (folder / path.name).write_text(path.read_text())
    return folder
