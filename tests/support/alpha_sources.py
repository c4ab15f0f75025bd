"""The version tests' two-module strategy, ``alpha.py`` and the ``helper.py`` it imports
relatively (:func:`tests.support.strategy_sources.bare_helper_source`): alpha's reason,
``<its TAG>|<helper's TAG>``, tells which generation of each module ran.

And what alpha.py is rewritten to for each way a load or a version check must fail: the
``ALPHA_*`` variants are :data:`ALPHA` with one edit each, so each differs from a good module
in exactly the way its name says.
"""
from __future__ import annotations

from tests.support.strategy_sources import tagged_hold_source


def alpha_source(*, tag: str) -> str:
    return tagged_hold_source(tag=tag, helper="helper")


def _edit(source: str, old: str, new: str) -> str:
    # str.replace silently changes nothing when ``old`` is gone: a variant would then be good.
    if source.count(old) != 1:
        raise ValueError(f"{old!r} is not once in the source")
    return source.replace(old, new)


# The first generation, which every check test rewrites.
ALPHA = alpha_source(tag="a1")
_HOLD = 'return Decision.hold(f"{TAG}|{helper.TAG}")'

# ------------------------------------------------------------------ loads, fails a check

ALPHA_PARAMS_NEED_A_WINDOW = _edit(ALPHA, "    pass", "    window: int")
ALPHA_EVALUATE_RAISES = _edit(ALPHA, _HOLD, 'raise ZeroDivisionError("bad math")')
ALPHA_EVALUATE_HANGS = "import time\n" + _edit(ALPHA, _HOLD, "time.sleep(5)\n    " + _HOLD)
ALPHA_KEEPS_MODULE_STATE = _edit(
    ALPHA, "def evaluate(ctx: Context) -> Decision:\n",
    "_SEEN = []\n\n\ndef evaluate(ctx: Context) -> Decision:\n    _SEEN.append(ctx.now_ms)\n")
ALPHA_STATE_NOT_JSON = _edit(ALPHA, _HOLD, 'return Decision.hold("x", {"when": object()})')

# ------------------------------------------------------------------ never loads

SYNTAX_ERROR = "def evaluate(ctx:\n"
IMPORTS_A_MISSING_HELPER = "from .no_such_helper import x\n"
IMPORTS_A_MISSING_MODULE = "import no_such_module_for_foresight_tests\n"
RAISES_AT_IMPORT = "raise RuntimeError('boom at import')\n"
NO_EVALUATE = "from kernel.strategy_api import StrategyParams\nclass Params(StrategyParams):\n    pass\n"
NO_PARAMS = "def evaluate(ctx):\n    pass\n"
