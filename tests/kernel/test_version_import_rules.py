"""kernel/versions/import_rules.py: what a strategy may import and call (an allowlist, with explicit,
documented opt-ins), enforced on the source when a version loads, before any of it runs."""
from __future__ import annotations

import sys

import pytest

from kernel.errors import ReloadFailed
from kernel.versions.generations import GEN_PREFIX
from kernel.versions.import_rules import DENIED
from tests.kernel.alpha_folder import reason_of, write
from tests.support.alpha_sources import ALPHA
from tests.support.stateful_sources import marker_source
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


# ------------------------------------------------------------------ an allowlist, with explicit opt-ins


@pytest.mark.parametrize("line, module", [
    ("import subprocess", "subprocess"), ("import socket", "socket"), ("import os", "os"),
    ("import os.path", "os.path"), ("from os import path", "os"), ("from os.path import join", "os.path"),
    ("import shutil", "shutil"), ("import multiprocessing", "multiprocessing"), ("import ctypes", "ctypes"),
    ("import signal", "signal"), ("import threading", "threading"), ("import asyncio", "asyncio"),
    ("import http.client", "http.client"), ("from urllib.request import urlopen", "urllib.request"),
    ("import ftplib", "ftplib"), ("import smtplib", "smtplib"), ("import pty", "pty"),
    ("import sqlite3", "sqlite3"), ("import tempfile", "tempfile"), ("import pathlib", "pathlib"),
    ("import io", "io"), ("import importlib", "importlib"), ("import builtins", "builtins"),
    ("import sys", "sys"), ("import _thread", "_thread"), ("from numpy import f2py", "numpy.f2py"),
    ("import concurrent.futures", "concurrent.futures"), ("import logging", "logging"),
])
def test_standard_modules_with_effects_are_refused_naming_the_module(loader, folder, line, module):
    write(folder, "alpha.py", line + "\n" + ALPHA)
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "import"
    assert f"import of {module!r}" in str(exc.value), exc.value
    assert "ALLOW_IMPORTS" in str(exc.value)


@pytest.mark.parametrize("line, module", [
    ("import pydantic", "pydantic"), ("from pydantic import BaseModel", "pydantic"),
    ("import requests", "requests"),
    ("import no_such_module_for_foresight_tests", "no_such_module_for_foresight_tests"),
])
def test_anything_outside_the_allowlist_is_refused_naming_the_module(loader, folder, line, module):
    write(folder, "alpha.py", line + "\n" + ALPHA)
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "import"
    assert f"{module!r} is not allowed" in str(exc.value)


def test_the_usual_standard_library_and_numpy_are_allowed(loader, folder):
    lines = ("from __future__ import annotations\nimport math, statistics, json, re, time, random, bisect, heapq\n"
             "import collections, dataclasses, functools, itertools, operator, typing, enum, decimal, datetime\n"
             "import numpy as np\nimport numpy.linalg\nfrom numpy import array\n")
    write(folder, "alpha.py", lines + ALPHA)
    v = loader.load("alpha", 1)
    assert reason_of(v) == "a1|a1"
    v.unload()


def test_a_denied_module_loads_when_the_module_says_why(loader, folder):
    write(folder, "alpha.py", 'ALLOW_IMPORTS = {"socket": "test: talks to a local risk service"}\n'
                              "import socket\nimport socket as s2\n" + ALPHA)
    v = loader.load("alpha", 1)
    assert reason_of(v) == "a1|a1"
    assert v.opt_ins == {"alpha.py": {"ALLOW_IMPORTS": {"socket": "test: talks to a local risk service"}}}
    v.unload()
    # The opt-in covers submodules of what it names, and only the module that declares it.
    write(folder, "alpha.py", 'ALLOW_IMPORTS = {"os": "test"}\nimport os.path\n' + ALPHA)
    loader.load("alpha", 2).unload()
    write(folder, "helper.py", 'import os\nTAG = "a1"\n')
    with pytest.raises(ReloadFailed, match="helper.py"):
        loader.load("alpha", 3)


@pytest.mark.parametrize("decl, words", [
    ('ALLOW_IMPORTS = {"socket": ""}', "non-empty reason"),
    ('ALLOW_IMPORTS = ["socket"]', "dict literal"),
    ('ALLOW_IMPORTS = {"socket": REASON}', "non-empty reason"),
    ('ALLOW_IMPORTS = {"kernel.ledger": "I want it"}', "cannot be opted in"),
    ('ALLOW_IMPORTS = {"strategies": "I want it"}', "cannot be opted in"),
    ('ALLOW_IMPORTS = {"a": "x"}\nALLOW_IMPORTS = {"socket": "y"}', "declared once"),
    ('ALLOW_IMPORTS = {}\nALLOW_IMPORTS |= {"socket": "y"}', "declared once"),
])
def test_an_opt_in_is_a_literal_with_reasons_and_never_covers_the_project(loader, folder, decl, words):
    write(folder, "alpha.py", 'REASON = "r"\n' + decl + "\nimport socket\n" + ALPHA)
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "import" and words in str(exc.value), exc.value


@pytest.mark.parametrize("line, name", [
    ('open("/tmp/x", "w")', "open"), ('exec("x = 1")', "exec"), ('eval("1")', "eval"),
    ('compile("1", "f", "eval")', "compile"), ('__import__("os")', "__import__"),
    ('getattr(__builtins__, "open")', "__builtins__"), ("f = Decision.__import__", "__import__"),
    ("breakpoint", "breakpoint"), ("exit", "exit"),
])
def test_builtins_with_effects_are_refused_unless_the_module_says_why(loader, folder, line, name):
    write(folder, "alpha.py", ALPHA + f"\n\ndef _unused():\n    {line}\n")
    with pytest.raises(ReloadFailed) as exc:
        loader.load("alpha", 1)
    assert exc.value.stage == "import" and f"{name!r}" in str(exc.value), exc.value
    write(folder, "alpha.py", f'ALLOW_BUILTINS = {{"{name}": "test"}}\n' + ALPHA + f"\n\ndef _unused():\n    {line}\n")
    loader.load("alpha", 2).unload()


def test_nothing_of_a_refused_module_runs(loader, folder, tmp_path):
    marker = tmp_path / "ran"
    write(folder, "alpha.py", marker_source(str(marker)) + "\nimport subprocess\n")
    with pytest.raises(ReloadFailed, match="subprocess"):
        loader.load("alpha", 1)
    assert not marker.exists(), "the rules are checked on the source, before any of it runs"


def test_the_denied_list_names_only_standard_modules():
    assert set(DENIED) <= set(sys.stdlib_module_names) | {"__main__", "distutils", "imp", "asyncore", "asynchat",
                                                          "smtpd"}
