"""kernel/versions.py: strategy generations (fresh module objects per load), content hashes,
the import rules, the checks a version passes before it goes live, and the registry's
swap / pin / rollback under the reload lock."""
from __future__ import annotations

import importlib
import os
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from kernel.errors import ReloadFailed
from kernel.strategy_api import Candle, Context, Decision
from kernel.versions import (
    GEN_PREFIX,
    SmokeSample,
    StrategyLoader,
    StrategyRegistry,
    check_version,
    module_state_fingerprint,
)

STRATEGY = '''\
from kernel.strategy_api import Context, Decision, StrategyParams

from . import helper

TAG = "{tag}"


class Params(StrategyParams):
    pass


def warmup(params):
    return 3


def evaluate(ctx: Context) -> Decision:
    return Decision.hold(f"{{TAG}}|{{helper.TAG}}")
'''

HELPER = '''\
TAG = "{tag}"
'''


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "strategies"
    d.mkdir()
    write(d, "__init__.py", "")
    write(d, "alpha.py", STRATEGY.format(tag="a1"))
    write(d, "helper.py", HELPER.format(tag="a1"))
    return d


@pytest.fixture
def loader(folder: Path) -> StrategyLoader:
    return StrategyLoader(folder)


def ctx(**kw) -> Context:
    candles = tuple(Candle(1_700_000_000_000 + i * 300_000, 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(5))
    base = dict(slot="s1", symbol="BTC/USDT", timeframe="5m", now_ms=candles[-1].ts, candles=candles,
                position=0.0, entry_price=None, params=None)
    base.update(kw)
    return Context(**base)


def reason_of(version) -> str:
    return version.evaluate(ctx(params=version.params({}))).reason


def sample(slot: str = "s1", params: dict | None = None) -> SmokeSample:
    candles = tuple(Candle(1_700_000_000_000 + i * 300_000, 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(5))
    return SmokeSample(slot=slot, symbol="BTC/USDT", timeframe="5m", params=params or {}, candles=candles,
                       position=0.0, entry_price=None)


# ------------------------------------------------------------------ generations


def test_each_load_is_a_fresh_generation_without_importlib_reload(loader, folder, monkeypatch):
    def no_reload(module):
        raise AssertionError(f"importlib.reload({module.__name__}) must never be used")

    monkeypatch.setattr(importlib, "reload", no_reload)
    v1 = loader.load("alpha", 1)
    v2 = loader.load("alpha", 2)
    try:
        assert v1.package != v2.package
        assert v1.package.startswith(GEN_PREFIX) and v2.package.startswith(GEN_PREFIX)
        assert v1.module is not v2.module
        helpers1 = [m for m in v1.modules if m.__name__.endswith(".helper")]
        helpers2 = [m for m in v2.modules if m.__name__.endswith(".helper")]
        assert len(helpers1) == 1 and len(helpers2) == 1
        assert helpers1[0] is not helpers2[0], "the helper must be loaded fresh too"
        assert v1.module.helper is helpers1[0]
        assert v2.module.helper is helpers2[0]
        # Nothing of a generation lands in the strategies package itself.
        assert "strategies.alpha" not in sys.modules or sys.modules["strategies.alpha"] not in (v1.module, v2.module)
    finally:
        v1.unload()
        v2.unload()


def test_same_sources_same_sha_and_a_helper_edit_makes_a_new_version(loader, folder):
    v1 = loader.load("alpha", 1)
    v2 = loader.load("alpha", 2)
    assert v1.sha256 == v2.sha256
    assert set(v1.files) == {"alpha.py", "helper.py"}
    write(folder, "helper.py", HELPER.format(tag="a1") + "# a comment is an edit too\n")
    v3 = loader.load("alpha", 3)
    assert v3.sha256 != v1.sha256
    assert v3.files["alpha.py"] == v1.files["alpha.py"]
    assert v3.files["helper.py"] != v1.files["helper.py"]
    for v in (v1, v2, v3):
        v.unload()


def test_an_old_generation_keeps_its_own_helper_after_a_new_one_loads(loader, folder):
    old = loader.load("alpha", 1)
    write(folder, "alpha.py", STRATEGY.format(tag="b2"))
    write(folder, "helper.py", HELPER.format(tag="b2"))
    new = loader.load("alpha", 2)
    assert reason_of(old) == "a1|a1"
    assert reason_of(new) == "b2|b2"
    new.unload()
    old.unload()
    # Unloaded from sys.modules, a version a cycle still holds keeps working, whole.
    assert reason_of(old) == "a1|a1"
    assert not any(k.startswith(old.package) for k in sys.modules)


def test_a_rewrite_within_the_same_second_at_the_same_size_is_seen(loader, folder):
    """Bytecode caches key on (mtime, size): the loader compiles the text it hashed."""
    path = folder / "helper.py"
    v1 = loader.load("alpha", 1)
    st = path.stat()
    write(folder, "helper.py", HELPER.format(tag="zz"))  # same length as "a1"
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    v2 = loader.load("alpha", 2)
    assert reason_of(v2) == "a1|zz"
    assert v2.sha256 != v1.sha256
    v1.unload()
    v2.unload()


# ------------------------------------------------------------------ import rules


@pytest.mark.parametrize("line", [
    "import strategies.helper",
    "from strategies.helper import TAG as OTHER",
    "from strategies import helper as other",
])
def test_absolute_imports_of_strategies_are_rejected(loader, folder, line):
    write(folder, "alpha.py", line + "\n" + STRATEGY.format(tag="a1"))
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
    write(folder, "alpha.py", line + "\n" + STRATEGY.format(tag="a1"))
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "import"
    assert "kernel.strategy_api" in str(exc.value)


def test_the_strategy_api_numpy_and_the_standard_library_are_allowed(loader, folder):
    write(folder, "alpha.py", "import math\nimport kernel.strategy_api\nimport numpy\n" + STRATEGY.format(tag="a1"))
    v = loader.load("alpha", 1)
    assert reason_of(v) == "a1|a1"
    v.unload()


def test_a_rule_broken_in_a_helper_is_caught_too(loader, folder):
    write(folder, "helper.py", "from kernel.gate import OrderGate\n" + HELPER.format(tag="a1"))
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "import"


# ------------------------------------------------------------------ load failures name their stage


@pytest.mark.parametrize("source, stage, words", [
    ("def evaluate(ctx:\n", "import", "syntax error"),
    ("from .no_such_helper import x\n", "import", "import failed"),
    ("import no_such_module_for_foresight_tests\n", "import", "import failed"),
    ("raise RuntimeError('boom at import')\n", "import", "boom at import"),
    ("from kernel.strategy_api import StrategyParams\nclass Params(StrategyParams):\n    pass\n",
     "interface", "evaluate"),
    ("def evaluate(ctx):\n    pass\n", "interface", "Params"),
])
def test_a_broken_module_fails_to_load_at_its_stage(loader, folder, source, stage, words):
    write(folder, "alpha.py", source)
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == stage
    assert words in str(exc.value)
    assert not any(k.startswith(GEN_PREFIX) and k.endswith(".alpha") for k in sys.modules)


# ------------------------------------------------------------------ checks before going live


def test_check_version_passes_a_good_version_and_sets_its_baseline(loader):
    v = loader.load("alpha", 1)
    check_version(v, [sample("s1"), sample("s2")], budget_s=2.0)
    assert v.baseline == module_state_fingerprint(v.modules)
    v.unload()


def test_params_that_no_longer_validate_fail_the_params_check(loader, folder):
    write(folder, "alpha.py", STRATEGY.format(tag="a1").replace("    pass", "    window: int"))
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample("s1")], budget_s=2.0)
    assert exc.value.stage == "params"
    assert "s1" in str(exc.value) and "window" in str(exc.value)
    v.unload()


def test_evaluate_raising_fails_the_smoke_check(loader, folder):
    write(folder, "alpha.py", STRATEGY.format(tag="a1").replace(
        'return Decision.hold(f"{TAG}|{helper.TAG}")', 'raise ZeroDivisionError("bad math")'))
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=2.0)
    assert exc.value.stage == "smoke"
    assert "bad math" in str(exc.value)
    v.unload()


def test_evaluate_hanging_past_its_budget_fails_the_budget_check(loader, folder):
    write(folder, "alpha.py", "import time\n" + STRATEGY.format(tag="a1").replace(
        'return Decision.hold(f"{TAG}|{helper.TAG}")',
        'time.sleep(5)\n    return Decision.hold(f"{TAG}|{helper.TAG}")'))
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=0.2)
    assert exc.value.stage == "budget"
    v.unload()


def test_evaluate_changing_module_state_fails_the_stateless_check(loader, folder):
    write(folder, "alpha.py", STRATEGY.format(tag="a1").replace(
        'def evaluate(ctx: Context) -> Decision:\n',
        '_SEEN = []\n\n\ndef evaluate(ctx: Context) -> Decision:\n    _SEEN.append(ctx.now_ms)\n'))
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=2.0)
    assert exc.value.stage == "stateless"
    v.unload()


def test_state_that_is_not_json_fails_the_smoke_check(loader, folder):
    write(folder, "alpha.py", STRATEGY.format(tag="a1").replace(
        'return Decision.hold(f"{TAG}|{helper.TAG}")', 'return Decision.hold("x", {"when": object()})'))
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=2.0)
    assert exc.value.stage == "smoke"
    v.unload()


# ------------------------------------------------------------------ registry


def test_swap_pin_and_rollback(loader, folder):
    reg = StrategyRegistry()
    assert reg.pin("alpha")[0] is None
    v1 = loader.load("alpha", reg.next_number("alpha"))
    reg.swap(v1)
    assert reg.pin("alpha")[0] is v1
    assert reg.next_number("alpha") == 2
    write(folder, "alpha.py", STRATEGY.format(tag="b2"))
    write(folder, "helper.py", HELPER.format(tag="b2"))
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
        write(folder, "alpha.py", STRATEGY.format(tag=tag))
        write(folder, "helper.py", HELPER.format(tag=tag))
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
    write(folder, "alpha.py", STRATEGY.format(tag="b2"))
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
