"""Strategies that hide state, one per place a strategy can hide it (kernel/versions/statelessness.py
must find each), and the modules the import and file rules refuse.

:func:`stateful_source` is a strategy that holds (reason ``"stateful"``) after ``mutate`` ran:
one line of ``evaluate`` touching what ``setup`` (module-level code) made. It imports the
``helper`` sibling (tests/support/strategy_sources.py's ``bare_helper_source``), so a mutation
can reach into a helper module too. ``STATEFUL`` names every kind: ``{kind: (setup, mutate)}``.
"""
from __future__ import annotations

import textwrap


def stateful_source(setup: str, mutate: str, *, after: int = 0) -> str:
    """A strategy whose evaluate runs ``mutate`` (from cycle ``after`` on, counted in ctx.state:
    0 means at every call, smoke evaluations included) and holds."""
    guard = f'if int(ctx.state.get("n", 0)) + 1 >= {after}:\n        ' if after else ""
    return f'''\
"""Test strategy: keeps state in a place the statelessness check must see ({mutate.strip()})."""
import itertools
import random

import numpy

from kernel.strategy_api import Context, Decision, StrategyParams

from . import helper

{textwrap.dedent(setup).strip()}


class Params(StrategyParams):
    pass


def warmup(params):
    return 3


def evaluate(ctx: Context) -> Decision:
    n = int(ctx.state.get("n", 0)) + 1
    {guard}{mutate.strip()}
    if ctx.position > 0:
        return Decision.exit("stateful", {{"n": n}})
    return Decision.enter("stateful", {{"n": n}})
'''


STATEFUL: dict[str, tuple[str, str]] = {
    "module global": ("_COUNT = 0", "global _COUNT; _COUNT += 1"),
    "module global list": ("_SEEN = []", "_SEEN.append(ctx.now_ms)"),
    "helper module": ("", "helper.COUNT = getattr(helper, 'COUNT', 0) + 1"),
    "class attribute": ("class Counter:\n    n = 0", "Counter.n += 1"),
    "nested class attribute": ("class Outer:\n    class Inner:\n        n = 0", "Outer.Inner.n += 1"),
    "base class attribute": ("class _Base:\n    n = 0\n\n\nclass Child(_Base):\n    pass\n\n\ndel _Base",
                             "Child.__bases__[0].n += 1"),
    "instance at module level": ("class _Box:\n    def __init__(self):\n        self.n = 0\n\n\n_BOX = _Box()",
                                 "_BOX.n += 1"),
    "instance with slots": ("class _Slot:\n    __slots__ = ('n',)\n\n    def __init__(self):\n"
                            "        self.n = 0\n\n\n_SLOT = _Slot()", "_SLOT.n += 1"),
    "function attribute": ("def _tick():\n    return 1", "_tick.calls = getattr(_tick, 'calls', 0) + 1"),
    "closure cell": ("def _make():\n    n = 0\n\n    def bump():\n        nonlocal n\n        n += 1\n"
                     "        return n\n    return bump\n\n\n_bump = _make()", "_bump()"),
    "mutable default (made by a call)": ("def _fresh():\n    return []\n\n\ndef _remember(x, seen=_fresh()):\n"
                                         "    seen.append(x)", "_remember(ctx.now_ms)"),
    "keyword-only mutable default": ("def _fresh():\n    return {}\n\n\ndef _remember(x, *, seen=_fresh()):\n"
                                     "    seen[x] = 1", "_remember(ctx.now_ms)"),
    "container inside a tuple": ('def _fresh_list():\n    return []\n\n\n_TABLE = ({"seen": _fresh_list()},)',
                                 '_TABLE[0]["seen"].append(1)'),
    "bound method": ("_push = [].append", "_push(ctx.now_ms)"),
    "random generator": ("_RNG = random.Random(7)", "_RNG.random()"),
    "numpy array": ("_ARR = numpy.zeros(3)", "_ARR[0] += 1"),
    "rebinding a function": ("def _f():\n    return 1", "globals()['_f'] = lambda: 2"),
}

# Refused before anything runs.
ITERATOR_AT_MODULE_LEVEL = stateful_source("_IDS = itertools.count()", "next(_IDS)")
MUTABLE_DEFAULT_LITERAL = stateful_source("def _remember(x, seen=[]):\n    seen.append(x)", "_remember(1)")



def marker_source(marker: str) -> str:
    """A strategy that, if imported at all, creates the file ``marker`` (it never should)."""
    return f'''\
ALLOW_BUILTINS = {{"open": "test: proves this code never runs"}}
open({marker!r}, "w").close()

from kernel.strategy_api import Context, Decision, StrategyParams


class Params(StrategyParams):
    pass


def evaluate(ctx: Context) -> Decision:
    open({marker!r}, "w").close()
    return Decision.hold("outside")
'''
