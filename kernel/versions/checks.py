"""The checks a version passes before it is published, the wrapped calls into a strategy
(params, warmup, evaluate, migrate_state), and the one function that builds a cycle's
Context — a live cycle and the smoke check both use it, so the check sees exactly what
live trading would.

Every call into strategy code is preceded by a look at the halt (``should_stop``): from
the moment a halt is observed no strategy code starts, whether for a cycle or a reload.
"""
from __future__ import annotations

import json
import threading
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..errors import ReloadFailed, StrategyFault
from ..protocol import TIMEFRAMES
from ..strategy_api import Candle, Context, Decision
from .statelessness import module_state_fingerprint
from .version import StrategyVersion

__all__ = ["Halted", "SmokeSample", "build_context", "check_halt", "check_version", "migrate", "run_evaluate"]

ShouldStop = Callable[[], bool] | None


class Halted(Exception):
    """A halt was observed before a strategy call: the call was not made."""


class CandleSource(Protocol):
    def candles(self, symbol: str, timeframe: str, end_close_ms: int, limit: int) -> list[Candle]: ...


def check_halt(should_stop: ShouldStop, before: str) -> None:
    """Raise :class:`Halted` if a halt is observed; called right before each strategy call."""
    if should_stop is not None and should_stop():
        raise Halted(f"halted: a halt was observed before {before}; no strategy code runs during a halt")


@dataclass
class SmokeSample:
    """One slot as a cycle would see it: what its Context is built from. ``candles`` is only
    for callers without a feed (tests): the candles then stand for the feed, up to their
    last close."""

    slot: str
    symbol: str
    timeframe: str
    params: dict[str, Any]
    candles: tuple = ()
    position: float = 0.0
    entry_price: float | None = None
    state: dict[str, Any] = field(default_factory=dict)
    state_schema: int | None = None
    entries_allowed: bool = True


def run_evaluate(version: StrategyVersion, ctx: Context, should_stop: ShouldStop = None) -> Decision:
    """strategy_safe_wrapper: whatever the strategy does, the kernel gets a Decision or a
    StrategyFault, never a stray exception (and no call at all once halted: Halted)."""
    check_halt(should_stop, "evaluate")
    try:
        decision = version.evaluate(ctx)
    except Exception as exc:  # noqa: BLE001
        raise StrategyFault(f"evaluate raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(decision, Decision):
        raise StrategyFault(f"evaluate returned {type(decision).__name__}, not a Decision")
    return decision


def migrate(version: StrategyVersion, state: dict, from_schema: int | None, should_stop: ShouldStop = None) -> dict:
    if from_schema is None or from_schema == version.state_schema:
        return state
    if version.migrate_state is None:
        return {}  # an incompatible old state is dropped rather than misread
    check_halt(should_stop, "migrate_state")
    try:
        out = version.migrate_state(dict(state), from_schema)
    except Exception as exc:  # noqa: BLE001
        raise StrategyFault(f"migrate_state raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, dict):
        raise StrategyFault("migrate_state must return a dict")
    return out


class ContextFailed(Exception):
    """Building a Context failed at ``stage`` (params, feed, migrate); ``__cause__`` says why."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def build_context(version: StrategyVersion, sample: SmokeSample, *, close_ms: int, feed: CandleSource,
                  should_stop: ShouldStop = None) -> Context:
    """The Context of the cycle for the candle closing at ``close_ms``: the slot's params
    (validated by the version), the version's full warm-up of candles ending at that close,
    the slot's state (migrated), position and entry price, ``now_ms`` the close itself and
    ``candle_ms`` the open time of the candle that closed then (whether the feed had it is
    the caller's to check: a live cycle does, kernel/cycles.py).
    Raises Halted, or ContextFailed with the stage that failed."""
    check_halt(should_stop, "params")
    try:
        params = version.params(sample.params)
    except Exception as exc:  # noqa: BLE001 - pydantic's message names the field
        raise ContextFailed("params", str(exc)) from exc
    check_halt(should_stop, "warmup")
    try:
        n = version.warmup(params)
    except Exception as exc:  # noqa: BLE001
        raise ContextFailed("params", f"warmup raised {type(exc).__name__}: {exc}") from exc
    try:
        candles = tuple(feed.candles(sample.symbol, sample.timeframe, close_ms, n))
    except Exception as exc:  # noqa: BLE001 - a feed error is the cycle's, not the kernel's
        raise ContextFailed("feed", f"{type(exc).__name__}: {exc}") from exc
    try:
        state = migrate(version, sample.state, sample.state_schema, should_stop)
    except StrategyFault as exc:
        raise ContextFailed("migrate", str(exc)) from exc
    return Context(
        slot=sample.slot, symbol=sample.symbol, timeframe=sample.timeframe, now_ms=close_ms, candles=candles,
        position=sample.position, entry_price=sample.entry_price, params=params,
        state=types.MappingProxyType(state), entries_allowed=sample.entries_allowed,
        candle_ms=close_ms - _tf_ms(sample.timeframe),
    )


class _SampleCandles:
    """A feed made of one sample's candles (a test's sample, no feed given)."""

    def __init__(self, candles: tuple) -> None:
        self._candles = candles

    def candles(self, symbol: str, timeframe: str, end_close_ms: int, limit: int) -> list[Candle]:
        return list(self._candles[-limit:]) if limit > 0 else []


def _tf_ms(timeframe: str) -> int:
    return TIMEFRAMES[timeframe] * 1000


def _check_params_and_state(version: StrategyVersion, s: SmokeSample, should_stop: ShouldStop) -> None:
    """A slot the smoke run does not evaluate: its params validate and its state migrates."""
    check_halt(should_stop, "params")
    try:
        version.params(s.params)
    except Exception as exc:  # noqa: BLE001
        raise ContextFailed("params", str(exc)) from exc
    migrate(version, s.state, s.state_schema, should_stop)


def check_version(version: StrategyVersion, samples: list[SmokeSample], budget_s: float, *,
                  feed: CandleSource | None = None, now_ms: int | None = None, smoke_slots: int | None = None,
                  should_stop: ShouldStop = None) -> None:
    """The checks a version passes before it is published: params of every slot valid (and
    its state migratable), a smoke evaluation of the first ``smoke_slots`` slots (all if None)
    within the time budget, on contexts built exactly as a live cycle builds them (the close
    before ``now_ms``), and no module state changed by it. A halt observed before any
    strategy call stops the check: ReloadFailed("halted"). Raises ReloadFailed."""
    contexts = []
    for i, s in enumerate(samples):
        try:
            if smoke_slots is None or i < smoke_slots:
                if feed is None:
                    source: CandleSource = _SampleCandles(s.candles)
                    tf = _tf_ms(s.timeframe)
                    close = (s.candles[-1].ts + tf) if s.candles else ((now_ms or 0) // tf) * tf
                else:
                    source = feed
                    tf = _tf_ms(s.timeframe)
                    close = ((now_ms or 0) // tf) * tf  # the latest close, as its next live cycle's
                try:
                    contexts.append(build_context(version, s, close_ms=close, feed=source, should_stop=should_stop))
                except ContextFailed as exc:
                    if exc.stage != "feed":
                        raise
                    _check_params_and_state(version, s, should_stop)  # no candles to evaluate on
            else:
                _check_params_and_state(version, s, should_stop)
        except Halted as exc:
            raise ReloadFailed("halted", str(exc)) from exc
        except ContextFailed as exc:
            if exc.stage == "params":
                raise ReloadFailed("params", f"params of slot {s.slot} no longer valid: {exc}") from exc
            raise ReloadFailed(exc.stage, f"slot {s.slot}: {exc}") from exc
        except StrategyFault as exc:
            raise ReloadFailed("migrate", f"slot {s.slot}: {exc}") from exc
    baseline = module_state_fingerprint(version.modules)
    outcome: dict[str, Any] = {}

    def smoke() -> None:
        try:
            for ctx in contexts:
                d = run_evaluate(version, ctx, should_stop)
                if d.state is not None:
                    json.dumps(d.state)
            outcome["ok"] = True
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc

    # On its own thread so that a hanging evaluate costs the budget, not the reload thread.
    t = threading.Thread(target=smoke, name=f"smoke-{version.name}", daemon=True)
    t.start()
    t.join(budget_s)
    if t.is_alive():
        raise ReloadFailed("budget", f"smoke evaluation did not finish within its budget of {budget_s * 1000:.0f} ms")
    if "error" in outcome:
        exc = outcome["error"]
        if isinstance(exc, Halted):
            raise ReloadFailed("halted", str(exc))
        if isinstance(exc, TypeError) and "JSON" in str(exc):
            raise ReloadFailed("smoke", f"state is not JSON-serialisable: {exc}")
        raise ReloadFailed("smoke", f"smoke evaluation failed: {exc}")
    after = module_state_fingerprint(version.modules)
    if after != baseline:
        raise ReloadFailed("stateless", "evaluate changed module-level state: strategies must be stateless "
            "(return what you want kept in Decision.state)")
    version.set_baseline()
