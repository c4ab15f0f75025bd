"""kernel/versions/checks.py: the checks a version passes before it goes live (params, smoke
evaluation within its budget, JSON state, statelessness), the smoke contexts built as a live
cycle's are, and a halt stopping the check before its next strategy call."""
from __future__ import annotations

import threading

import pytest

from kernel.errors import ReloadFailed
from kernel.feeds.synthetic import SyntheticFeed
from kernel.strategy_api import Context
from kernel.versions.checks import SmokeSample, build_context, check_version
from kernel.versions.statelessness import module_state_fingerprint
from tests.kernel.alpha_folder import sample, write
from tests.support.alpha_sources import (ALPHA_EVALUATE_HANGS, ALPHA_EVALUATE_RAISES, ALPHA_KEEPS_MODULE_STATE,
                                         ALPHA_PARAMS_NEED_A_WINDOW, ALPHA_STATE_NOT_JSON)
from tests.support.strategy_sources import LIVE_SHAPE_CHECKER, call_recorder_source, recorded_calls


def test_check_version_passes_a_good_version_and_sets_its_baseline(loader):
    v = loader.load("alpha", 1)
    check_version(v, [sample("s1"), sample("s2")], budget_s=2.0)
    assert v.baseline == module_state_fingerprint(v.modules)
    v.unload()


def test_params_that_no_longer_validate_fail_the_params_check(loader, folder):
    write(folder, "alpha.py", ALPHA_PARAMS_NEED_A_WINDOW)
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample("s1")], budget_s=2.0)
    assert exc.value.stage == "params"
    assert "s1" in str(exc.value) and "window" in str(exc.value)
    v.unload()


def test_evaluate_raising_fails_the_smoke_check(loader, folder):
    write(folder, "alpha.py", ALPHA_EVALUATE_RAISES)
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=2.0)
    assert exc.value.stage == "smoke"
    assert "bad math" in str(exc.value)
    v.unload()


def test_evaluate_hanging_past_its_budget_fails_the_budget_check(loader, folder):
    write(folder, "alpha.py", ALPHA_EVALUATE_HANGS)
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=0.2)
    assert exc.value.stage == "budget"
    v.unload()


def test_evaluate_changing_module_state_fails_the_stateless_check(loader, folder):
    write(folder, "alpha.py", ALPHA_KEEPS_MODULE_STATE)
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=2.0)
    assert exc.value.stage == "stateless"
    v.unload()


def test_state_that_is_not_json_fails_the_smoke_check(loader, folder):
    write(folder, "alpha.py", ALPHA_STATE_NOT_JSON)
    v = loader.load("alpha", 1)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [sample()], budget_s=2.0)
    assert exc.value.stage == "smoke"
    v.unload()


# ------------------------------------------------------------------ smoke contexts shaped like live ones (issue 10, item 5)

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def _shape_version(loader, folder, tmp_name: str = "shape"):
    write(folder, f"{tmp_name}.py", LIVE_SHAPE_CHECKER)
    return loader.load(tmp_name, 1)


def test_every_evaluated_smoke_context_is_shaped_like_a_live_cycles(loader, folder):
    """The shape checker raises unless now_ms is the last candle's close, the candles are the full
    warm-up, and params and state are the slot's own: five slots, three evaluated, all pass."""
    v = _shape_version(loader, folder)
    samples = [SmokeSample(slot=f"s{i}", symbol="BTC/USDT", timeframe=tf, params={"marker": f"s{i}", "window": 9},
                           state={"slot": f"s{i}", "n": 4}, state_schema=v.state_schema)
               for i, tf in enumerate(("5m", "15m", "1h", "5m", "1m"))]
    seen: list[Context] = []
    evaluate = v.evaluate
    v.evaluate = lambda ctx: (seen.append(ctx), evaluate(ctx))[1]
    check_version(v, samples, budget_s=5.0, feed=SyntheticFeed(seed=7), now_ms=T0 + 7 * 60_000 + 123,
                  smoke_slots=3)
    assert [c.slot for c in seen] == ["s0", "s1", "s2"]
    for c, tf in zip(seen, (300_000, 900_000, 3_600_000)):
        assert c.now_ms == (T0 + 7 * 60_000) // tf * tf == c.candles[-1].ts + tf
        assert len(c.candles) == 9 and c.params.marker == c.slot and c.state["n"] == 4
    v.unload()


def test_a_slot_past_smoke_slots_is_not_evaluated_but_its_params_are_checked(loader, folder):
    v = _shape_version(loader, folder)
    good = [SmokeSample(slot=f"s{i}", symbol="BTC/USDT", timeframe="5m", params={"marker": f"s{i}"})
            for i in range(3)]
    bad = SmokeSample(slot="s3", symbol="BTC/USDT", timeframe="5m", params={})  # marker has no default
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [*good, bad], budget_s=5.0, feed=SyntheticFeed(seed=7), now_ms=T0, smoke_slots=3)
    assert exc.value.stage == "params" and "s3" in str(exc.value) and "marker" in str(exc.value)
    v.unload()


def test_a_context_without_the_slots_params_fails_the_smoke_check(loader, folder):
    """The checker itself bites: another slot's params in a context make evaluate raise."""
    v = _shape_version(loader, folder)
    wrong = SmokeSample(slot="s1", symbol="BTC/USDT", timeframe="5m", params={"marker": "s2"})
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, [wrong], budget_s=5.0, feed=SyntheticFeed(seed=7), now_ms=T0)
    assert exc.value.stage == "smoke" and "not this slot's params" in str(exc.value)
    v.unload()


def test_build_context_is_a_live_cycles_context():
    """The one function a live cycle and the smoke check build their Context with."""
    class V:  # the parts of a version build_context calls
        state_schema = 2

        @staticmethod
        def params(raw):
            return raw

        @staticmethod
        def warmup(params):
            return 4

        @staticmethod
        def migrate_state(state, from_schema):
            return {**state, "from": from_schema}

    sample = SmokeSample(slot="s", symbol="ETH/USDT", timeframe="15m", params={"p": 1}, position=0.5,
                         entry_price=10.0, state={"n": 1}, state_schema=1, entries_allowed=False)
    close = T0 + 3 * 900_000
    ctx = build_context(V, sample, close_ms=close, feed=SyntheticFeed(seed=7))
    assert ctx.now_ms == close == ctx.candles[-1].ts + 900_000 and len(ctx.candles) == 4
    assert (ctx.position, ctx.entry_price, ctx.entries_allowed, ctx.params) == (0.5, 10.0, False, {"p": 1})
    assert dict(ctx.state) == {"n": 1, "from": 1}


# ------------------------------------------------------------------ a halt stops the check (issue 10, item 1)


def _recorder(loader, folder, *, schema: int = 1):
    write(folder, "recorder.py", call_recorder_source(tag="r", state_schema=schema))
    return loader.load("recorder", 1)


def _calls(capsys) -> list[tuple[str, str, str, int]]:
    return recorded_calls(capsys.readouterr().out)


def _samples(n: int, schema: int | None = None) -> list[SmokeSample]:
    return [SmokeSample(slot=f"s{i}", symbol="BTC/USDT", timeframe="5m", params={"sleep_ms": 0},
                        state={"n": 1}, state_schema=schema) for i in range(n)]


def test_a_halt_before_the_check_stops_it_before_any_strategy_call(loader, folder, capsys):
    v = _recorder(loader, folder, schema=2)
    _calls(capsys)  # the import's own output, if any
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, _samples(3, schema=1), budget_s=5.0, feed=SyntheticFeed(seed=7), now_ms=T0,
                      should_stop=lambda: True)
    assert exc.value.stage == "halted" and "halted" in str(exc.value)
    assert _calls(capsys) == [], "no params validator, warmup, migrate_state or evaluate ran"
    v.unload()


def test_a_halt_during_the_smoke_run_stops_it_before_the_next_evaluate(loader, folder, capsys):
    v = _recorder(loader, folder, schema=2)
    halted = threading.Event()
    evaluate = v.evaluate

    def first_then_halt(ctx):
        try:
            return evaluate(ctx)
        finally:
            halted.set()  # the halt lands while the first smoke evaluate runs

    v.evaluate = first_then_halt
    _calls(capsys)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, _samples(3, schema=1), budget_s=5.0, feed=SyntheticFeed(seed=7), now_ms=T0,
                      should_stop=halted.is_set)
    assert exc.value.stage == "halted"
    kinds = [kind for _, kind, _, _ in _calls(capsys)]
    assert kinds.count("evaluate") == 1, kinds
    assert kinds.count("migrate_state") == 3 and kinds.index("evaluate") == len(kinds) - 1, kinds
    v.unload()


def test_a_halt_between_the_contexts_stops_before_the_next_migrate_state(loader, folder, capsys):
    v = _recorder(loader, folder, schema=2)
    migrate_state = v.migrate_state
    halted = threading.Event()

    def migrate_then_halt(state, from_schema):
        try:
            return migrate_state(state, from_schema)
        finally:
            halted.set()

    v.migrate_state = migrate_then_halt
    _calls(capsys)
    with pytest.raises(ReloadFailed) as exc:
        check_version(v, _samples(3, schema=1), budget_s=5.0, feed=SyntheticFeed(seed=7), now_ms=T0,
                      should_stop=halted.is_set)
    assert exc.value.stage == "halted"
    kinds = [kind for _, kind, _, _ in _calls(capsys)]
    assert kinds.count("migrate_state") == 1 and "evaluate" not in kinds, kinds
    v.unload()
