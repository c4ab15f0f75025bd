"""kernel/versions/statelessness.py: what counts as state (everything a version's modules reach:
globals, helper modules, classes, instances, function attributes and defaults, closure cells,
containers), the fingerprint a version's checks compare around the smoke evaluation, the
cheaper watch a cycle runs after each evaluate, and the static refusal of mutable defaults."""
from __future__ import annotations

import types
from pathlib import Path

import pytest

from kernel.errors import ReloadFailed
from kernel.versions import module_state_fingerprint as exported_fingerprint
from kernel.versions.checks import check_version
from kernel.versions.loader import StrategyLoader
from kernel.versions.statelessness import (MAX_DEPTH, MAX_WATCHED, module_state_change, module_state_changed,
                                           module_state_fingerprint, module_state_watch)
from tests.kernel.alpha_folder import ctx, reason_of, sample, write
from tests.support.alpha_sources import ALPHA_KEEPS_MODULE_STATE
from tests.support.checkout import REPO
from tests.support.stateful_sources import (ITERATOR_AT_MODULE_LEVEL, MUTABLE_DEFAULT_LITERAL, STATEFUL,
                                            stateful_source)


def _module(**values) -> types.ModuleType:
    mod = types.ModuleType("_fs_state_probe")
    vars(mod).update(values)
    return mod


def test_values_are_state_and_so_is_rebinding_a_global_to_other_code():
    mod = _module(TAG="a1", helper=len, Cls=int, fn=lambda: 1)
    before = module_state_fingerprint([mod])
    assert module_state_fingerprint([mod]) == before, "nothing changed, nothing moves"
    mod.TAG = "b2"
    assert module_state_fingerprint([mod]) != before
    # Rebinding a global to other code is a change too: a new closure can carry a counter.
    mod2 = _module(fn=lambda: 1)
    before2 = module_state_fingerprint([mod2])
    mod2.fn = lambda: 2
    assert module_state_fingerprint([mod2]) != before2
    assert exported_fingerprint is module_state_fingerprint


def test_the_watch_sees_a_mutated_value_and_a_new_global():
    seen: list[int] = []
    mod = _module(SEEN=seen)
    watch = module_state_watch([mod])
    assert not module_state_changed(watch)
    seen.append(1)
    assert module_state_changed(watch)
    assert module_state_change(watch) == "_fs_state_probe.SEEN"
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
    assert v.changed_at == "alpha._SEEN"
    assert v.baseline != module_state_fingerprint(v.modules)
    v.unload()


# ------------------------------------------------------------------ every place state can hide


@pytest.mark.parametrize("kind", sorted(STATEFUL))
def test_state_in_each_place_is_refused_by_the_checks_before_publication(loader, folder, kind):
    setup, mutate = STATEFUL[kind]
    write(folder, "alpha.py", stateful_source(setup, mutate))
    v = loader.load("alpha", 1)  # loads: only running it shows the state
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=5.0)
    assert exc.value.stage == "stateless", (kind, exc.value)
    v.unload()


@pytest.mark.parametrize("kind", sorted(STATEFUL))
def test_state_in_each_place_is_seen_by_the_per_cycle_watch(loader, folder, kind):
    """What the smoke evaluation did not trigger, the check after each cycle sees, naming where."""
    setup, mutate = STATEFUL[kind]
    write(folder, "alpha.py", stateful_source(setup, mutate))
    v = loader.load("alpha", 1)
    v.set_baseline()  # as a first load at boot: no smoke evaluation
    assert not v.state_changed()
    v.evaluate(ctx(params=v.params({})))
    assert v.state_changed(), kind
    assert v.changed_at, kind
    v.unload()


def test_the_watch_names_the_place_that_changed(loader, folder):
    write(folder, "alpha.py", stateful_source(*STATEFUL["class attribute"]))
    v = loader.load("alpha", 1)
    v.set_baseline()
    v.evaluate(ctx(params=v.params({})))
    assert v.state_changed() and v.changed_at == "alpha.Counter"
    v.unload()


def test_state_that_changes_only_later_passes_the_smoke_check_and_is_caught_by_the_watch(loader, folder):
    setup, mutate = STATEFUL["class attribute"]
    write(folder, "alpha.py", stateful_source(setup, mutate, after=3))
    v = loader.load("alpha", 1)
    check_version(v, [sample()], budget_s=5.0)  # the smoke sample's state is {}: cycle 1, no change
    assert not v.state_changed()
    v.evaluate(ctx(params=v.params({}), state=types.MappingProxyType({"n": 2})))
    assert v.state_changed() and v.changed_at == "alpha.Counter"
    v.unload()


def test_an_iterator_at_module_level_is_refused_outright(loader, folder):
    write(folder, "alpha.py", ITERATOR_AT_MODULE_LEVEL)
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        v.set_baseline()
    assert exc.value.stage == "stateless"
    assert "alpha._IDS" in str(exc.value) and "iterator" in str(exc.value)
    v.unload()


def test_module_data_too_large_or_too_deep_to_watch_is_refused(loader, folder):
    for number, (setup, words) in enumerate([
        (f"_BIG = [0.5] * {MAX_WATCHED + 1}", "too large to check"),
        (f"_DEEP = ()\nfor _ in range({MAX_DEPTH + 5}):\n    _DEEP = (_DEEP,)", "nested deeper"),
    ], start=1):
        write(folder, "alpha.py", stateful_source(setup, "pass"))
        v = loader.load("alpha", number)
        with pytest.raises(ReloadFailed, match=words) as exc:
            v.set_baseline()
        assert exc.value.stage == "stateless"
        v.unload()
    # An immutable table of the same size is no state: a tuple of floats is not watched.
    write(folder, "alpha.py", stateful_source(f"_TABLE = tuple([0.5] * {MAX_WATCHED + 1})", "pass"))
    v = loader.load("alpha", 3)
    check_version(v, [sample()], budget_s=5.0)
    v.unload()


def test_a_self_referencing_structure_is_walked_once(loader, folder):
    write(folder, "alpha.py", stateful_source("class _Node:\n    pass\n\n\n_A = _Node()\n_B = _Node()\n"
                                              "_A.other = _B\n_B.other = _A\n_L = []\n_L.append(_L)", "pass"))
    v = loader.load("alpha", 1)
    check_version(v, [sample()], budget_s=5.0)
    assert not v.state_changed()
    v.unload()


def test_reading_state_free_code_and_constants_changes_nothing(loader, folder):
    """Constants, immutable tables, classes, a frozen instance, a compiled pattern and numpy
    functions at module level, only read by evaluate: no false alarm."""
    setup = ("import re\n_PAT = re.compile('x+')\n_TABLE = (1, 2.5, 'a', frozenset({3}))\n"
             "_LOOKUP = {'a': 1}\n_ARR = numpy.arange(3)\n\n\nclass _Cfg:\n    LIMIT = 3\n\n"
             "    def scale(self, x, factor=2):\n        return x * factor\n\n\n_CFG = _Cfg()")
    mutate = "_ = (_PAT.match('xx'), _TABLE[1], _LOOKUP.get('a'), float(numpy.sum(_ARR)), _CFG.scale(2))"
    write(folder, "alpha.py", stateful_source(setup, mutate))
    v = loader.load("alpha", 1)
    check_version(v, [sample(), sample("s2")], budget_s=5.0)
    for _ in range(3):
        v.evaluate(ctx(params=v.params({})))
    assert not v.state_changed()
    v.unload()


@pytest.mark.parametrize("name", StrategyLoader(REPO / "strategies").available())
def test_the_shipped_strategies_pass_and_stay_unchanged(name):
    loader = StrategyLoader(REPO / "strategies")
    v = loader.load(name, 1)
    check_version(v, [sample(), sample("s2")], budget_s=5.0)
    for _ in range(3):
        v.evaluate(ctx(params=v.params({})))
        v.params({"lookback": 5} if name == "breakout" else {})
    assert not v.state_changed(), v.changed_at
    v.unload()


# ------------------------------------------------------------------ static: mutable defaults


@pytest.mark.parametrize("default", ["[]", "{}", "set()", "{1, 2}", "[x for x in ()]", "dict()",
                                     "collections.deque()"])
def test_a_mutable_default_argument_is_refused_at_load_naming_function_and_argument(loader, folder, default):
    write(folder, "alpha.py", stateful_source(
        f"import collections\n\n\ndef _remember(x, seen={default}):\n    return x", "pass"))
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "stateless"
    assert "_remember()" in str(exc.value) and "'seen'" in str(exc.value)


def test_mutable_defaults_of_methods_lambdas_and_keyword_only_arguments_are_refused(loader, folder):
    for setup, words in [
        ("class _K:\n    def add(self, x, acc=[]):\n        return acc", "_K.add()"),
        ("_f = lambda x, acc={}: acc", "<lambda>()"),
        ("def _g(x, *, acc=[]):\n    return acc", "_g()"),
    ]:
        write(folder, "alpha.py", stateful_source(setup, "pass"))
        with pytest.raises(ReloadFailed) as exc:
            loader.load("alpha", 1)
        assert exc.value.stage == "stateless" and words in str(exc.value), (setup, exc.value)


def test_a_mutable_default_in_a_helper_is_refused_too(loader, folder):
    write(folder, "helper.py", 'TAG = "a1"\n\n\ndef remember(x, seen=[]):\n    return seen\n')
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "stateless" and "helper.py" in str(exc.value) and "remember()" in str(exc.value)


def test_immutable_defaults_are_fine(loader, folder):
    write(folder, "alpha.py", stateful_source(
        "def _f(x, a=None, b=(), c=frozenset(), d=1.5, *, e='s'):\n    return x", "_f(1)"))
    v = loader.load("alpha", 1)
    check_version(v, [sample()], budget_s=5.0)
    v.unload()


def test_the_literal_mutable_default_source_is_refused(loader, folder: Path):
    write(folder, "alpha.py", MUTABLE_DEFAULT_LITERAL)
    with pytest.raises(ReloadFailed, match="mutable default"):
        loader.load("alpha", 1)
