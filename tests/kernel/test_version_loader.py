"""kernel/versions/loader.py and generations.py: strategy generations (fresh module objects per
load), content hashes, and load failures that name their stage."""
from __future__ import annotations

import importlib
import os
import sys

import pytest

from kernel.errors import ReloadFailed
from kernel.versions.generations import GEN_PREFIX
from tests.kernel.alpha_folder import reason_of, write
from tests.support.alpha_sources import (IMPORTS_A_MISSING_HELPER, IMPORTS_A_MISSING_MODULE, NO_EVALUATE,
                                         NO_PARAMS, RAISES_AT_IMPORT, SYNTAX_ERROR, alpha_source)
from tests.support.strategy_sources import bare_helper_source

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
    write(folder, "helper.py", bare_helper_source(tag="a1") + "# a comment is an edit too\n")
    v3 = loader.load("alpha", 3)
    assert v3.sha256 != v1.sha256
    assert v3.files["alpha.py"] == v1.files["alpha.py"]
    assert v3.files["helper.py"] != v1.files["helper.py"]
    for v in (v1, v2, v3):
        v.unload()


def test_an_old_generation_keeps_its_own_helper_after_a_new_one_loads(loader, folder):
    old = loader.load("alpha", 1)
    write(folder, "alpha.py", alpha_source(tag="b2"))
    write(folder, "helper.py", bare_helper_source(tag="b2"))
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
    write(folder, "helper.py", bare_helper_source(tag="zz"))  # same length as "a1"
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    v2 = loader.load("alpha", 2)
    assert reason_of(v2) == "a1|zz"
    assert v2.sha256 != v1.sha256
    v1.unload()
    v2.unload()


# ------------------------------------------------------------------ load failures name their stage


@pytest.mark.parametrize("source, stage, words", [
    (SYNTAX_ERROR, "import", "syntax error"),
    (IMPORTS_A_MISSING_HELPER, "import", "import failed"),
    (IMPORTS_A_MISSING_MODULE, "import", "import failed"),
    (RAISES_AT_IMPORT, "import", "boom at import"),
    (NO_EVALUATE, "interface", "evaluate"),
    (NO_PARAMS, "interface", "Params"),
])
def test_a_broken_module_fails_to_load_at_its_stage(loader, folder, source, stage, words):
    write(folder, "alpha.py", source)
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == stage
    assert words in str(exc.value)
    assert not any(k.startswith(GEN_PREFIX) and k.endswith(".alpha") for k in sys.modules)
