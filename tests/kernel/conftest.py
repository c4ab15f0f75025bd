"""Fixtures of the in-process kernel tests (tests/kernel/kernel_driver.py has the driver) and of
the version tests (the alpha strategy's folder, tests/kernel/alpha_folder.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from kernel.versions.loader import StrategyLoader
from tests.kernel.alpha_folder import write
from tests.kernel.kernel_driver import STRATEGIES, Driver
from tests.support.alpha_sources import ALPHA
from tests.support.strategy_folders import write_strategies
from tests.support.strategy_sources import bare_helper_source


@pytest.fixture
def strategies(tmp_path: Path) -> Path:
    """A strategies folder with the in-process tests' strategies (kernel_driver.py)."""
    folder = tmp_path / "strategies"
    folder.mkdir()
    return write_strategies(folder, STRATEGIES)


@pytest.fixture
def driver(tmp_path: Path, strategies: Path):
    d = Driver(tmp_path / "state", strategies)
    yield d
    d.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The version tests' strategies folder: alpha (generation a1) and its helper."""
    d = tmp_path / "strategies"
    d.mkdir()
    write(d, "__init__.py", "")
    write(d, "alpha.py", ALPHA)
    write(d, "helper.py", bare_helper_source(tag="a1"))
    return d


@pytest.fixture
def loader(folder: Path) -> StrategyLoader:
    return StrategyLoader(folder)
