"""kernel/versions/registry.py: the registry's swap / pin / rollback under the reload lock."""
from __future__ import annotations

import sys
import threading

import pytest

from kernel.errors import ReloadFailed
from kernel.versions.registry import StrategyRegistry
from tests.kernel.alpha_folder import reason_of, write
from tests.support.alpha_sources import alpha_source
from tests.support.strategy_sources import bare_helper_source


def test_swap_pin_and_rollback(loader, folder):
    reg = StrategyRegistry()
    assert reg.pin("alpha")[0] is None
    v1 = loader.load("alpha", reg.next_number("alpha"))
    reg.swap(v1)
    assert reg.pin("alpha")[0] is v1
    assert reg.next_number("alpha") == 2
    write(folder, "alpha.py", alpha_source(tag="b2"))
    write(folder, "helper.py", bare_helper_source(tag="b2"))
    v2 = loader.load("alpha", reg.next_number("alpha"))
    pinned_before = reg.pin("alpha")[0]
    reg.swap(v2)
    assert reg.pin("alpha")[0] is v2
    assert reg.previous["alpha"] is v1
    assert reason_of(pinned_before) == "a1|a1", "a cycle that pinned v1 finishes on v1"
    current, previous, waited = reg.rollback("alpha")
    assert current is v1 and previous is v2 and waited >= 0
    assert reg.pin("alpha")[0] is v1
    # Rolling back again goes forward to v2: the previous one is kept at hand.
    reg.rollback("alpha")
    assert reg.get("alpha") is v2


def test_rollback_without_a_previous_version_is_refused(loader):
    reg = StrategyRegistry()
    reg.swap(loader.load("alpha", 1))
    with pytest.raises(ReloadFailed) as exc:
        reg.rollback("alpha")
    assert exc.value.stage == "rollback"


def test_a_third_version_drops_the_first_from_sys_modules_but_not_from_a_cycle(loader, folder):
    reg = StrategyRegistry()
    versions = []
    for i, tag in enumerate(("a1", "b2", "c3"), start=1):
        write(folder, "alpha.py", alpha_source(tag=tag))
        write(folder, "helper.py", bare_helper_source(tag=tag))
        v = loader.load("alpha", i)
        versions.append(v)
        reg.swap(v)
    v1, v2, v3 = versions
    assert reg.get("alpha") is v3 and reg.previous["alpha"] is v2
    assert not any(k == v1.package or k.startswith(v1.package + ".") for k in sys.modules)
    assert any(k.startswith(v2.package + ".") for k in sys.modules)
    assert reason_of(v1) == "a1|a1"


def test_a_swap_that_cannot_get_the_lock_is_abandoned(loader, folder):
    reg = StrategyRegistry()
    v1 = loader.load("alpha", 1)
    reg.swap(v1)
    write(folder, "alpha.py", alpha_source(tag="b2"))
    v2 = loader.load("alpha", 2)
    held, done = threading.Event(), threading.Event()

    def hold():
        with reg.lock:
            held.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(5)
        with pytest.raises(ReloadFailed) as exc:
            reg.swap(v2, timeout_s=0.1)
        assert exc.value.stage == "lock"
        assert "abandoned" in str(exc.value)
        assert reg.current["alpha"] is v1, "an abandoned swap changes nothing"
        assert "alpha" not in reg.previous
        with pytest.raises(ReloadFailed) as exc:
            reg.rollback("alpha", timeout_s=0.1)
    finally:
        done.set()
        t.join()
    reg.swap(v2, timeout_s=1.0)
    assert reg.get("alpha") is v2
