"""``wait_until``: poll a predicate until it holds, or fail saying what was awaited.

A predicate answers "not yet" with a falsy value. Any exception it raises is a bug in the
test or in what it reads, and goes straight up: a KeyError or TypeError is never taken
for "not yet". Only the errors a caller names in ``transient`` (a file being replaced
while it is read, say) count as "not yet".
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold in time (an AssertionError, so pytest reports it as a failure)."""


def wait_until(predicate: Callable[[], T], *, timeout: float, what: str, poll: float = 0.05,
               transient: tuple[type[BaseException], ...] = (), abort: Callable[[], None] | None = None,
               last_seen: Callable[[], str] | None = None) -> T:
    """The first truthy value of ``predicate()``.

    ``abort`` runs after each unsuccessful try and raises to stop early (a process that died
    will never make the condition true). On timeout the error names ``what`` and the last thing seen:
    ``last_seen()`` if given (the predicate's own answer is often just False), else the repr
    of the predicate's last answer or of the last transient error.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
        except transient as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if abort is not None:
            abort()
        if time.monotonic() >= deadline:
            seen = last_seen() if last_seen is not None else repr(last)
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}; last seen: {seen}")
        time.sleep(poll)
