"""tests/support/waiting.py: a wait helper never hides a predicate's bug, and says what it waited for."""
from __future__ import annotations

import json
from itertools import count

import pytest

from tests.support.waiting import WaitTimeout, wait_until


def test_returns_the_first_truthy_answer():
    calls = count(1)
    assert wait_until(lambda: next(calls) >= 3 and "ready", timeout=5, what="three calls", poll=0) == "ready"
    assert next(calls) == 4


@pytest.mark.parametrize("error", [KeyError("state"), TypeError("'NoneType' is not subscriptable")])
def test_a_predicates_key_or_type_error_goes_straight_up(error):
    calls = count(1)

    def broken():
        next(calls)
        raise error

    with pytest.raises(type(error)):
        wait_until(broken, timeout=5, what="a broken predicate", poll=0)
    assert next(calls) == 2, "raised at the first call, not retried until the timeout"


def test_only_the_named_transient_errors_mean_not_yet():
    answers = iter([FileNotFoundError(), json.JSONDecodeError("torn", "{", 1), {"state": "running"}])

    def read():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until(read, timeout=5, what="a whole file", poll=0,
                      transient=(FileNotFoundError, json.JSONDecodeError)) == {"state": "running"}


def test_the_timeout_says_what_was_awaited_and_what_was_seen_last():
    with pytest.raises(WaitTimeout, match=r"waiting for the kernel to halt; last seen: \{'state': 'running'\}"):
        wait_until(lambda: None, timeout=0.05, what="the kernel to halt", poll=0.01,
                   last_seen=lambda: repr({"state": "running"}))
    with pytest.raises(AssertionError, match="last seen: 0"):
        wait_until(lambda: 0, timeout=0.05, what="nothing", poll=0.01)


def test_abort_stops_the_wait_early():
    def dead():
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until(lambda: False, timeout=60, what="a dead process", poll=0, abort=dead)
