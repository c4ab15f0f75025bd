"""bench/peer_freqtrade.py's Foresight half end to end (a real ``python -m kernel`` on the ccxt
feed and broker against the loopback fake Binance; freqtrade is not installed by tests), and
the poller's failure arithmetic on samples computed by hand."""
from __future__ import annotations

import pytest

from bench.peer_freqtrade import Poller, run_foresight

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_failure_time_runs_from_each_failed_poll_to_the_next_good_one() -> None:
    p = Poller(lambda: True)
    p.samples = [(0.0, True), (1.0, False), (2.0, False), (3.0, True), (4.0, False), (9.0, False)]
    # failing 1 -> 3 (2 s) and 4 -> the window's end 5 (1 s); the 9 s sample is outside
    assert p.failure_ms(0.0, 5.0) == 3000.0
    assert p.failure_ms(2.5, 3.5) == 0.0  # only the good poll at 3 s lies inside
    assert p.polls(0.0, 5.0) == 5


def test_the_foresight_half_deploys_over_ccxt_http() -> None:
    fs = run_foresight(reloads=2, restarts=1, spacing_s=0.2, warm_s=0.5, keep=False, trade_timeout_s=None,
                       align_to_close=False)
    assert fs["reload_results"] == ["loaded"]
    assert fs["hot_reload"]["deploys"] == 2 and fs["restart"]["deploys"] == 1
    # status.json says running through a hot reload, at every 10 ms poll; not through a restart
    assert fs["hot_reload"]["polls"] > 0 and fs["hot_reload"]["api_failure_ms"]["max"] == 0.0
    assert fs["restart"]["api_failure_ms"]["p50"] > 0.0
    assert fs["restart"]["api_failure_ms"]["p50"] <= fs["restart"]["blind_window_ms"]["p50"]
    assert fs["rss_mb"] and fs["rss_after_reloads_mb"] and fs["rss_after_restarts_mb"]
