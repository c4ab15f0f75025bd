"""kernel/versions/import_rules.py: what a strategy may import, enforced when a version loads."""
from __future__ import annotations

import sys

import pytest

from kernel.errors import ReloadFailed
from kernel.versions.generations import GEN_PREFIX
from tests.kernel.alpha_folder import reason_of, write
from tests.support.alpha_sources import ALPHA
from tests.support.strategy_sources import bare_helper_source


@pytest.mark.parametrize("line", [
    "import strategies.helper",
    "from strategies.helper import TAG as OTHER",
    "from strategies import helper as other",
])
def test_absolute_imports_of_strategies_are_rejected(loader, folder, line):
    write(folder, "alpha.py", line + "\n" + ALPHA)
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "import"
    assert "absolute import" in str(exc.value)
    assert not any(k.startswith(GEN_PREFIX) and k.endswith(".alpha") for k in sys.modules)


@pytest.mark.parametrize("line", [
    "from kernel.ledger import Ledger",
    "import kernel.kernel",
    "import kernel",
    "from kernel import strategy_api",
    "import django",
    "from trading import models",
])
def test_kernel_imports_other_than_the_strategy_api_are_rejected(loader, folder, line):
    write(folder, "alpha.py", line + "\n" + ALPHA)
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "import"
    assert "kernel.strategy_api" in str(exc.value)


def test_the_strategy_api_numpy_and_the_standard_library_are_allowed(loader, folder):
    write(folder, "alpha.py", "import math\nimport kernel.strategy_api\nimport numpy\n" + ALPHA)
    v = loader.load("alpha", 1)
    assert reason_of(v) == "a1|a1"
    v.unload()


def test_a_rule_broken_in_a_helper_is_caught_too(loader, folder):
    write(folder, "helper.py", "from kernel.gate import OrderGate\n" + bare_helper_source(tag="a1"))
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "import"
