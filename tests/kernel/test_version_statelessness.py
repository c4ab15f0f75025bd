"""kernel/versions/statelessness.py: what counts as module-level state, the fingerprint a
version's checks compare, and the cheaper watch a cycle runs after each evaluate."""
from __future__ import annotations

import types

from kernel.versions import module_state_fingerprint as exported_fingerprint
from kernel.versions.statelessness import module_state_changed, module_state_fingerprint, module_state_watch
from tests.kernel.alpha_folder import reason_of, write
from tests.support.alpha_sources import ALPHA_KEEPS_MODULE_STATE


def _module(**values) -> types.ModuleType:
    mod = types.ModuleType("_fs_state_probe")
    vars(mod).update(values)
    return mod


def test_code_is_not_state_but_values_are():
    mod = _module(TAG="a1", helper=len, Cls=int, fn=lambda: 1)
    before = module_state_fingerprint([mod])
    mod.fn = lambda: 2  # functions, classes and modules are code, not state
    mod.Cls = float
    assert module_state_fingerprint([mod]) == before
    mod.TAG = "b2"
    assert module_state_fingerprint([mod]) != before
    assert exported_fingerprint is module_state_fingerprint


def test_the_watch_sees_a_mutated_value_and_a_new_global():
    seen: list[int] = []
    mod = _module(SEEN=seen)
    watch = module_state_watch([mod])
    assert not module_state_changed(watch)
    seen.append(1)
    assert module_state_changed(watch)
    mod2 = _module(TAG="a1")
    watch2 = module_state_watch([mod2])
    mod2.CACHE = None
    assert module_state_changed(watch2)


def test_a_version_that_keeps_state_in_a_global_is_caught_after_its_baseline(loader, folder):
    write(folder, "alpha.py", ALPHA_KEEPS_MODULE_STATE)
    v = loader.load("alpha", 1)
    assert not v.state_changed(), "no baseline taken yet: nothing to compare with"
    v.set_baseline()
    assert not v.state_changed()
    reason_of(v)
    assert v.state_changed()
    assert v.baseline != module_state_fingerprint(v.modules)
    v.unload()
