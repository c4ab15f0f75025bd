"""kernel/versions/loader.py and generations.py: strategy generations (fresh module objects per
load), content hashes, load failures that name their stage, and only regular files physically
inside the strategies folder loading (no symlink, FIFO, device, folder or bytecode ever runs)."""
from __future__ import annotations

import importlib
import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from kernel.errors import ReloadFailed
from kernel.versions.generations import GEN_PREFIX, read_strategy_file, strategy_file_kind
from tests.kernel.alpha_folder import reason_of, write
from tests.support.alpha_sources import (IMPORTS_A_MISSING_HELPER, IMPORTS_A_MISSING_MODULE, NO_EVALUATE,
                                         NO_PARAMS, RAISES_AT_IMPORT, SYNTAX_ERROR, alpha_source)
from tests.support.stateful_sources import marker_source
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


# ------------------------------------------------------------------ only regular files inside the folder


def _outside(tmp_path: Path, marker: Path) -> Path:
    """A strategy outside the strategies folder that would leave ``marker`` if it ever ran."""
    out = tmp_path / "outside"
    out.mkdir(exist_ok=True)
    (out / "evil.py").write_text(marker_source(str(marker)))
    pkg = out / "pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nTAG = 'x'\n")
    return out


def _alpha_importing(helper: str) -> str:
    """alpha, importing ``helper`` (as ``helper``) instead of its helper module."""
    return alpha_source(tag="a1").replace("from . import helper", f"from . import {helper} as helper")


def _refused(loader, name: str, *words: str) -> ReloadFailed:
    with pytest.raises(ReloadFailed) as exc:
        loader.load(name, 1)
    assert exc.value.stage == "load", exc.value
    for w in words:
        assert w in str(exc.value), exc.value
    assert not any(k.startswith(GEN_PREFIX) and k.endswith(f".{name}") for k in sys.modules)
    return exc.value


def test_a_symlinked_strategy_is_refused_and_never_runs(loader, folder, tmp_path):
    marker = tmp_path / "ran"
    out = _outside(tmp_path, marker)
    (folder / "evil.py").symlink_to(out / "evil.py")
    assert loader.exists("evil"), "it is there: a reload naming it must say why it does not load"
    assert "evil" not in loader.available()
    _refused(loader, "evil", f"{folder.name}/evil.py is a symlink", "only regular files inside")
    assert not marker.exists()


def test_a_symlink_to_a_file_inside_the_folder_is_refused_too(loader, folder):
    (folder / "twin.py").symlink_to(folder / "alpha.py")
    _refused(loader, "twin", "twin.py is a symlink")


def test_a_symlinked_helper_is_refused_and_never_runs(loader, folder, tmp_path):
    marker = tmp_path / "ran"
    out = _outside(tmp_path, marker)
    (out / "helper.py").write_text(f"open({str(marker)!r}, 'w').close()\nTAG = 'x'\n")
    (folder / "helper.py").unlink()
    (folder / "helper.py").symlink_to(out / "helper.py")
    _refused(loader, "alpha", "helper.py is a symlink")
    assert not marker.exists()


@pytest.mark.parametrize("how", ["symlinked folder", "folder inside"])
def test_a_package_folder_is_never_imported(loader, folder, tmp_path, how):
    """Only <name>.py files load: a sub-folder (a package, or a symlink to one outside) never,
    and no other finder gets to look in the strategies folder for it."""
    marker = tmp_path / "ran"
    out = _outside(tmp_path, marker)
    if how == "symlinked folder":
        (folder / "pkg").symlink_to(out / "pkg", target_is_directory=True)
    else:
        (folder / "pkg").mkdir()
        (folder / "pkg" / "__init__.py").write_text((out / "pkg" / "__init__.py").read_text())
    write(folder, "alpha.py", _alpha_importing("pkg"))
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "import" and "pkg" in str(exc.value)
    assert not marker.exists()


def test_bytecode_and_extension_files_in_the_folder_are_not_modules(loader, folder, tmp_path):
    import py_compile

    marker = tmp_path / "ran"
    src = tmp_path / "compiled_src.py"
    src.write_text(f"open({str(marker)!r}, 'w').close()\nTAG = 'x'\n")
    py_compile.compile(str(src), cfile=str(folder / "compiled.pyc"))
    write(folder, "alpha.py", _alpha_importing("compiled"))
    with pytest.raises(ReloadFailed, match="compiled"):
        loader.load("alpha", 1)
    assert not marker.exists()


def test_a_fifo_never_blocks_the_load(loader, folder):
    os.mkfifo(folder / "fifo.py")
    outcome: dict = {}

    def load():
        try:
            loader.load("fifo", 1)
        except ReloadFailed as exc:
            outcome["error"] = exc

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(60)  # a safety net so that a regression fails instead of hanging the suite
    assert not t.is_alive(), "opening the FIFO blocked the loader"
    assert "fifo.py is a FIFO: only regular files inside" in str(outcome["error"])
    os.mkfifo(folder / "fifo_helper.py")
    write(folder, "alpha.py", _alpha_importing("fifo_helper"))
    _refused(loader, "alpha", "fifo_helper.py is a FIFO")


def test_a_directory_or_a_device_named_like_a_strategy_is_refused(loader, folder):
    (folder / "adir.py").mkdir()
    _refused(loader, "adir", "adir.py is a directory")
    assert strategy_file_kind(Path("/dev/null")).endswith("device")  # the check itself, on a real device
    # A device node inside the folder: `make test` runs as root (it installs its system packages).
    os.mknod(folder / "dev.py", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    _refused(loader, "dev", "dev.py is a device")


def test_read_strategy_file_checks_the_open_descriptor(folder, tmp_path):
    assert read_strategy_file(folder, "alpha.py") == (folder / "alpha.py").read_bytes()
    (folder / "link.py").symlink_to(folder / "alpha.py")
    for name, words in [("link.py", "is a symlink"), ("../x.py", "not a file name"), ("nope.py", "does not exist")]:
        with pytest.raises(ReloadFailed, match=words):
            read_strategy_file(folder, name)
    # The folder itself is opened without following a symlink.
    (tmp_path / "via").symlink_to(folder, target_is_directory=True)
    with pytest.raises(ReloadFailed, match="cannot be opened as a folder"):
        read_strategy_file(tmp_path / "via", "alpha.py")
