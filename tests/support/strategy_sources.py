"""The strategy modules tests and benchmarks write into temp strategies folders, as text.

Each is a complete module of the kernel's strategy API (``kernel.strategy_api``). The broken
ones are derived from :data:`HOLD_GOOD` by one edit each, so that each differs from a good
module in exactly the way its name says.
"""
from __future__ import annotations


def flipflop_source(*, warmup: int = 2) -> str:
    """Enters when flat, exits when holding: an order at every candle."""
    return f'''"""Test strategy: enter when flat, exit when holding, at every candle."""
from kernel.strategy_api import Context, Decision, StrategyParams


class Params(StrategyParams):
    pass


def warmup(params: Params) -> int:
    return {warmup}


def evaluate(ctx: Context) -> Decision:
    if ctx.position > 0:
        return Decision.exit("flip")
    if ctx.entries_allowed:
        return Decision.enter("flop")
    return Decision.hold("entries not allowed")
'''


FLIPFLOP = flipflop_source()

# flipflop with a cost: each cycle sleeps ``sleep_ms`` plus a hashed share of ``jitter_ms``
# (the same slot and candle always sleep the same), so that cycles overlap and fall out of step.
FLIP = '''\
"""Integration-test strategy: enters when flat, exits when holding (an order every
cycle), after sleeping ``sleep_ms`` plus a hashed ``jitter_ms`` share of a moment."""
import hashlib
import time

from kernel.strategy_api import Context, Decision, Field, StrategyParams


class Params(StrategyParams):
    sleep_ms: int = Field(0, ge=0)
    jitter_ms: int = Field(0, ge=0)


def warmup(params):
    return 3


def evaluate(ctx: Context) -> Decision:
    p = ctx.params
    if p.sleep_ms or p.jitter_ms:
        h = int(hashlib.blake2b(f"{ctx.slot}|{ctx.now_ms}".encode(), digest_size=4).hexdigest(), 16)
        time.sleep((p.sleep_ms + h % (p.jitter_ms + 1)) / 1000)
    if ctx.position > 0:
        return Decision.exit("flip exit")
    if ctx.entries_allowed:
        return Decision.enter("flip enter")
    return Decision.hold("flip: entries not allowed")
'''


def hold_source(*, tag: str, warmup: int) -> str:
    """Never trades: every cycle holds, with its module's ``TAG`` as the reason."""
    return f'''\
"""Integration-test strategy: holds, says which generation it is."""
from kernel.strategy_api import Context, Decision, StrategyParams

TAG = "{tag}"


class Params(StrategyParams):
    pass


def warmup(params):
    return {warmup}


def evaluate(ctx: Context) -> Decision:
    return Decision.hold(TAG)
'''


HOLD_GOOD = hold_source(tag="good", warmup=5)
# The cheapest strategy there is (bench/scale.py measures the kernel, not a strategy).
HOLD = hold_source(tag="hold", warmup=1)

# name: (the reload check that must reject it, its source)
BROKEN_AT_RELOAD: dict[str, tuple[str, str]] = {
    "syntax": ("import", 'def evaluate(ctx:\n    return None\n'),
    "import_error": ("import", 'from .no_such_helper import ema\n' + HOLD_GOOD),
    "exception_at_import": ("import", HOLD_GOOD + '\nraise RuntimeError("boom at import")\n'),
    "missing_evaluate": ("interface", HOLD_GOOD.replace("def evaluate(", "def evaluate_v2(")),
    "params_invalid": ("params", HOLD_GOOD.replace("    pass\n", "    window: int\n")),
    "evaluate_raises": ("smoke", HOLD_GOOD.replace("    return Decision.hold(TAG)",
                                                   '    raise ValueError("bad strategy math")')),
    "evaluate_hangs": ("budget", "import time\n" + HOLD_GOOD.replace(
        "    return Decision.hold(TAG)", "    time.sleep(60)\n    return Decision.hold(TAG)")),
    "mutates_module_state": ("stateless", HOLD_GOOD.replace(
        "def evaluate(ctx: Context) -> Decision:\n",
        "_CALLS = []\n\n\ndef evaluate(ctx: Context) -> Decision:\n    _CALLS.append(ctx.now_ms)\n")),
}


def runtime_fault_source(*, after: int, what: str, how: str) -> str:
    """Counts its cycles in ``ctx.state``; gets into a position and holds it until cycle
    ``after``, from then on runs ``how`` (one line of code: raise, sleep, touch a global)
    before trading again. ``what`` says in words what ``how`` does."""
    return f'''\
"""Integration-test strategy: counts its cycles in ctx.state; from cycle {after} on it {what}."""
import time

from kernel.strategy_api import Context, Decision, StrategyParams

_SEEN = []


class Params(StrategyParams):
    pass


def warmup(params):
    return 5


def evaluate(ctx: Context) -> Decision:
    n = int(ctx.state.get("n", 0)) + 1
    if n < {after}:  # behaves: gets into a position and holds it
        if ctx.position > 0:
            return Decision.hold(f"n={{n}}", {{"n": n}})
        return Decision.enter(f"n={{n}}", {{"n": n}})
    {how}
    if ctx.position > 0:
        return Decision.exit(f"n={{n}}", {{"n": n}})
    return Decision.enter(f"n={{n}}", {{"n": n}})
'''


def tagged_source(*, tag: str) -> str:
    """Trades at every candle; its reason is ``<its TAG>|<its helper's TAG>``, so a cycle that
    saw two generations (module of one, helper of another) shows it."""
    return f'''\
"""Integration-test strategy: its reason is this module's TAG and its helper's TAG."""
from kernel.strategy_api import Context, Decision, StrategyParams

from . import tag_helper as helper

TAG = "{tag}"


class Params(StrategyParams):
    pass


def warmup(params):
    return 5


def evaluate(ctx: Context) -> Decision:
    reason = f"{{TAG}}|{{helper.TAG}}"
    if ctx.position > 0:
        return Decision.exit(reason)
    if ctx.entries_allowed:
        return Decision.enter(reason)
    return Decision.hold(reason)
'''


def tag_helper_source(*, tag: str, extra: str = "") -> str:
    """The tagged strategy's helper (``tag_helper.py``); ``extra`` changes it and nothing else."""
    return f'''\
"""The tagged strategy's helper, loaded in the same generation."""
TAG = "{tag}"
{extra}
'''


# ------------------------------------------------------------------ the in-process kernel tests'

# FLIP without its jitter_ms: the in-process tests' own flip. Its own text (so its own sha256
# and Params), not FLIP's, since nothing proves the two interchangeable everywhere a test looks.
FLIP_WITHOUT_JITTER = '''\
"""Enters when flat, exits when holding: an order every cycle."""
import time

from kernel.strategy_api import Context, Decision, Field, StrategyParams


class Params(StrategyParams):
    sleep_ms: int = Field(0, ge=0)


def warmup(params):
    return 3


def evaluate(ctx: Context) -> Decision:
    if ctx.params.sleep_ms:
        time.sleep(ctx.params.sleep_ms / 1000)
    if ctx.position > 0:
        return Decision.exit("flip exit")
    if ctx.entries_allowed:
        return Decision.enter("flip enter")
    return Decision.hold("flip: entries not allowed")
'''


def tagged_hold_source(*, tag: str, helper: str = "tag_helper") -> str:
    """Holds at every candle with the reason ``<its TAG>|<its helper's TAG>``, so a test tells
    which generation of each module a cycle ran. ``helper``: the module it imports relatively
    (as ``helper``)."""
    imported = helper if helper == "helper" else f"{helper} as helper"
    return f'''\
from kernel.strategy_api import Context, Decision, StrategyParams

from . import {imported}

TAG = "{tag}"


class Params(StrategyParams):
    pass


def warmup(params):
    return 3


def evaluate(ctx: Context) -> Decision:
    return Decision.hold(f"{{TAG}}|{{helper.TAG}}")
'''


def bare_helper_source(*, tag: str) -> str:
    """A helper module that is its TAG and nothing else."""
    return f'TAG = "{tag}"\n'


# A helper that no longer compiles: the reload of its strategy must fail at import.
HELPER_SYNTAX_ERROR = "TAG = (\n"


def counter_source(*, after: int, how: str) -> str:
    """Counts its cycles in ``ctx.state`` and trades at every candle (enters when flat, exits
    when holding); from cycle ``after`` on it first runs ``how`` (one line: raise, sleep,
    touch a global). Unlike :func:`runtime_fault_source` it trades from the first cycle."""
    return f'''\
"""Counts its cycles in ctx.state; misbehaves from cycle {after} on: {how}."""
import time

from kernel.strategy_api import Context, Decision, StrategyParams

_SEEN = []


class Params(StrategyParams):
    pass


def warmup(params):
    return 3


def evaluate(ctx: Context) -> Decision:
    n = int(ctx.state.get("n", 0)) + 1
    if n >= {after}:
        {how}
    if ctx.position > 0:
        return Decision.exit(f"n={{n}}", {{"n": n}})
    return Decision.enter(f"n={{n}}", {{"n": n}})
'''


# A strategy whose evaluate always raises (a first load's smoke check rejects it), and the same
# module fixed. Its ``window`` param also decides its warmup.
EVALUATE_ALWAYS_RAISES = '''\
from kernel.strategy_api import Context, Decision, StrategyParams


class Params(StrategyParams):
    window: int = 5


def warmup(params):
    return params.window


def evaluate(ctx: Context) -> Decision:
    raise ValueError("always broken")
'''
EVALUATE_ALWAYS_RAISES_FIXED = EVALUATE_ALWAYS_RAISES.replace('raise ValueError("always broken")',
                                                              'return Decision.hold("ok")')

# A module breaking both static rules of strategies/ (an absolute import of strategies, a
# mutable module-level value): proof that the static checks can fail.
BREAKS_THE_STATIC_RULES = "import strategies.indicators\nCACHE = {}\n"


# ------------------------------------------------------------------ proof that no strategy code runs after a halt

# The line a call_recorder_source strategy prints (the kernel's output: its log) at the start of
# every call into it: ``<CALL_MARK> <tag> <kind> <slot or -> <time.time_ns() at the call's start>``.
# It imports only ``time`` and writes with the ``print`` builtin: no file, no ``sys``, nothing
# that the import allowlist (kernel/versions/import_rules.py) refuses.
CALL_MARK = "FORESIGHT-STRATEGY-CALL"


def call_recorder_source(*, tag: str, sleep_ms: int = 0, state_schema: int = 1) -> str:
    """Holds at every candle; records the wall-clock start of every call into it: its params'
    validator (``params``), ``warmup``, ``evaluate``, ``migrate_state``. Each ``evaluate`` sleeps
    the slot's ``sleep_ms`` param plus ``sleep_ms`` here. ``state_schema``: its STATE_SCHEMA (a
    new one makes every slot's state migrate)."""
    return f'''\
"""Integration-test strategy: records the start of every call into it on the kernel's output."""
import time

from kernel.strategy_api import Context, Decision, Field, StrategyParams, model_validator

TAG = "{tag}"
MARK = "{CALL_MARK}"
EXTRA_SLEEP_MS = {sleep_ms}
STATE_SCHEMA = {state_schema}


def _record(started_ns, kind, slot):
    # One write of the whole line (the kernel's output is unbuffered), so lines never interleave.
    print(f"{{MARK}} {{TAG}} {{kind}} {{slot}} {{started_ns}}\\n", end="", flush=True)


class Params(StrategyParams):
    sleep_ms: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _seen(self):
        _record(time.time_ns(), "params", "-")
        return self


def warmup(params):
    _record(time.time_ns(), "warmup", "-")
    return 3


def migrate_state(state, from_schema):
    _record(time.time_ns(), "migrate_state", "-")
    return dict(state)


def evaluate(ctx: Context) -> Decision:
    started = time.time_ns()
    _record(started, "evaluate", ctx.slot)
    time.sleep((ctx.params.sleep_ms + EXTRA_SLEEP_MS) / 1000)
    return Decision.hold(TAG, {{"n": int(ctx.state.get("n", 0)) + 1}})
'''


def recorded_calls(log_text: str) -> list[tuple[str, str, str, int]]:
    """The calls a CALL_RECORDER strategy recorded in a kernel's log: (tag, kind, slot, start ns)."""
    calls = []
    for line in log_text.splitlines():
        at = line.find(CALL_MARK + " ")
        if at < 0:
            continue
        fields = line[at + len(CALL_MARK) + 1:].split()
        if len(fields) == 4 and fields[3].isdigit():
            calls.append((fields[0], fields[1], fields[2], int(fields[3])))
    return calls


# ------------------------------------------------------------------ item 5: smoke contexts shaped like live ones

# Raises unless its ctx is shaped exactly like a live cycle's: now_ms at the last candle's close
# (its open + the timeframe), the full warm-up of candles, the slot's own params (``marker``
# must be the slot's id, and has no default), the slot's own state.
LIVE_SHAPE_CHECKER = '''\
"""Test strategy: raises unless its context is shaped like a live cycle's."""
from kernel.strategy_api import Context, Decision, Field, StrategyParams

TF_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
         "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}


class Params(StrategyParams):
    marker: str
    window: int = Field(7, ge=1)


def warmup(params):
    return params.window


def evaluate(ctx: Context) -> Decision:
    tf = TF_MS[ctx.timeframe]
    if ctx.params is None or ctx.params.marker != ctx.slot:
        raise ValueError(f"not this slot's params: {ctx.params!r}")
    if len(ctx.candles) < ctx.params.window:
        raise ValueError(f"{len(ctx.candles)} candles, warm-up {ctx.params.window}")
    if ctx.now_ms % tf or ctx.now_ms != ctx.candles[-1].ts + tf:
        raise ValueError(f"now_ms {ctx.now_ms} is not the last candle's close {ctx.candles[-1].ts + tf}")
    if ctx.state.get("slot", ctx.slot) != ctx.slot:
        raise ValueError(f"another slot's state: {dict(ctx.state)}")
    if ctx.position < 0:
        raise ValueError(f"position {ctx.position}")
    n = int(ctx.state.get("n", 0)) + 1
    return Decision.hold(f"live-shaped n={n}", {"slot": ctx.slot, "n": n})
'''
