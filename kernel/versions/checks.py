"""The checks a version passes before it is published, and the wrapped calls into a strategy
(evaluate, migrate_state) that the kernel's cycles use too."""
from __future__ import annotations

import json
import threading
import types
from dataclasses import dataclass, field
from typing import Any

from ..errors import ReloadFailed, StrategyFault
from ..strategy_api import Context, Decision
from .statelessness import module_state_fingerprint
from .version import StrategyVersion


@dataclass
class SmokeSample:
    """One recent situation a new version must handle before it goes live."""

    slot: str
    symbol: str
    timeframe: str
    params: dict[str, Any]
    candles: tuple
    position: float
    entry_price: float | None
    state: dict[str, Any] = field(default_factory=dict)
    state_schema: int | None = None


def run_evaluate(version: StrategyVersion, ctx: Context) -> Decision:
    """strategy_safe_wrapper: whatever the strategy does, the kernel gets a Decision or a
    StrategyFault, never a stray exception."""
    try:
        decision = version.evaluate(ctx)
    except Exception as exc:  # noqa: BLE001
        raise StrategyFault(f"evaluate raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(decision, Decision):
        raise StrategyFault(f"evaluate returned {type(decision).__name__}, not a Decision")
    return decision


def migrate(version: StrategyVersion, state: dict, from_schema: int | None) -> dict:
    if from_schema is None or from_schema == version.state_schema:
        return state
    if version.migrate_state is None:
        return {}  # an incompatible old state is dropped rather than misread
    try:
        out = version.migrate_state(dict(state), from_schema)
    except Exception as exc:  # noqa: BLE001
        raise StrategyFault(f"migrate_state raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, dict):
        raise StrategyFault("migrate_state must return a dict")
    return out


def check_version(version: StrategyVersion, samples: list[SmokeSample], budget_s: float) -> None:
    """The checks a version passes before it is published: params of every slot valid,
    a smoke evaluation on recent candles within the time budget, and no module state
    changed by it. Raises ReloadFailed."""
    contexts = []
    for s in samples:
        try:
            params = version.params(s.params)
        except Exception as exc:  # noqa: BLE001 - pydantic's message names the field
            raise ReloadFailed("params", f"params of slot {s.slot} no longer valid: {exc}") from exc
        try:
            state = migrate(version, s.state, s.state_schema)
        except StrategyFault as exc:
            raise ReloadFailed("migrate", f"slot {s.slot}: {exc}") from exc
        contexts.append(
            Context(
                slot=s.slot, symbol=s.symbol, timeframe=s.timeframe,
                now_ms=(s.candles[-1].ts if s.candles else 0), candles=s.candles,
                position=s.position, entry_price=s.entry_price, params=params,
                state=types.MappingProxyType(state), entries_allowed=True,
            )
        )
    baseline = module_state_fingerprint(version.modules)
    outcome: dict[str, Any] = {}

    def smoke() -> None:
        try:
            for ctx in contexts:
                d = run_evaluate(version, ctx)
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
        if isinstance(exc, TypeError) and "JSON" in str(exc):
            raise ReloadFailed("smoke", f"state is not JSON-serialisable: {exc}")
        raise ReloadFailed("smoke", f"smoke evaluation failed: {exc}")
    after = module_state_fingerprint(version.modules)
    if after != baseline:
        raise ReloadFailed("stateless", "evaluate changed module-level state: strategies must be stateless "
            "(return what you want kept in Decision.state)")
    version.set_baseline()
