"""kernel/versions/checks.py: the checks a version passes before it goes live (params, smoke
evaluation within its budget, JSON state, statelessness)."""
from __future__ import annotations

import pytest

from kernel.errors import ReloadFailed
from kernel.versions.checks import check_version
from kernel.versions.statelessness import module_state_fingerprint
from tests.kernel.alpha_folder import sample, write
from tests.support.alpha_sources import (ALPHA_EVALUATE_HANGS, ALPHA_EVALUATE_RAISES, ALPHA_KEEPS_MODULE_STATE,
                                         ALPHA_PARAMS_NEED_A_WINDOW, ALPHA_STATE_NOT_JSON)


def test_check_version_passes_a_good_version_and_sets_its_baseline(loader):
    v = loader.load("alpha", 1)
    check_version(v, [sample("s1"), sample("s2")], budget_s=2.0)
    assert v.baseline == module_state_fingerprint(v.modules)
    v.unload()


def test_params_that_no_longer_validate_fail_the_params_check(loader, folder):
    write(folder, "alpha.py", ALPHA_PARAMS_NEED_A_WINDOW)
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample("s1")], budget_s=2.0)
    assert exc.value.stage == "params"
    assert "s1" in str(exc.value) and "window" in str(exc.value)
    v.unload()


def test_evaluate_raising_fails_the_smoke_check(loader, folder):
    write(folder, "alpha.py", ALPHA_EVALUATE_RAISES)
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=2.0)
    assert exc.value.stage == "smoke"
    assert "bad math" in str(exc.value)
    v.unload()


def test_evaluate_hanging_past_its_budget_fails_the_budget_check(loader, folder):
    write(folder, "alpha.py", ALPHA_EVALUATE_HANGS)
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=0.2)
    assert exc.value.stage == "budget"
    v.unload()


def test_evaluate_changing_module_state_fails_the_stateless_check(loader, folder):
    write(folder, "alpha.py", ALPHA_KEEPS_MODULE_STATE)
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=2.0)
    assert exc.value.stage == "stateless"
    v.unload()


def test_state_that_is_not_json_fails_the_smoke_check(loader, folder):
    write(folder, "alpha.py", ALPHA_STATE_NOT_JSON)
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=2.0)
    assert exc.value.stage == "smoke"
    v.unload()
