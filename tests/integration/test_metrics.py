"""The kernel's Prometheus exporter in a real ``runkernel`` (--metrics-addr 127.0.0.1:0 --demo):
status.json names the port it picked; a scrape over HTTP parses with prometheus-client's
parser; its cycle counters grow between two scrapes; a halt written into control.json by
another process counts once, with one latency sample no longer than the write to the halted
status; a reload counts by its outcome; a non-loopback address stops the kernel at start."""
from __future__ import annotations

import os
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kernel import control_client as ctl
from tests.support.kernel_process import KernelProcess, kernel_env, runkernel_args
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

METRICS = ("--metrics-addr", "127.0.0.1:0")


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def test_a_running_kernel_serves_metrics_that_move_with_its_work(kernels):
    k = kernels(extra=METRICS)
    url = k.wait(lambda s: s.get("metrics_url"), what="the metrics url in status.json")["metrics_url"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    first = scrape(url)
    assert total(first, "foresight_kernel_state", foresight_kernel_state="running") == 1.0
    assert total(first, "foresight_kernel_slots") == 16.0  # the demo deployment
    ran = total(first, "foresight_kernel_cycles_total")
    # Two scrapes: the cycle counters grow while the demo trades (600x: a 5m candle every 0.5 s).
    second = wait_until(lambda: (s := scrape(url)) and total(s, "foresight_kernel_cycles_total") > ran + 16 and s,
                        timeout=60, what="the cycle counters to grow")
    assert total(second, "foresight_kernel_cycle_start_lag_seconds_count") > total(
        first, "foresight_kernel_cycle_start_lag_seconds_count")
    assert total(second, "foresight_kernel_heartbeat_timestamp_seconds") > 0

    reloads = total(second, "foresight_kernel_reloads_total", result="unchanged")
    r = k.call("reload", args={"strategy": "ema_cross"})
    assert r["result"] == "applied" and r["detail"]["strategies"][0]["result"] == "unchanged", r
    assert total(scrape(url), "foresight_kernel_reloads_total", result="unchanged") == reloads + 1

    before = scrape(url)
    assert total(before, "foresight_kernel_halts_total") == 0
    ctl.halt(k.state_dir, "metrics test", by="integration-test")  # control.json, as the console writes it
    written_ns = os.stat(k.state_dir / "control.json").st_mtime_ns
    k.wait(lambda s: s["state"] == "halted", what="the halt")
    seen_ns = time.time_ns()
    after = scrape(url)
    assert total(after, "foresight_kernel_halts_total", source="control.json") == 1
    assert total(after, "foresight_kernel_halt_latency_seconds_count") == total(
        before, "foresight_kernel_halt_latency_seconds_count") + 1
    latency = total(after, "foresight_kernel_halt_latency_seconds_sum") - total(
        before, "foresight_kernel_halt_latency_seconds_sum")
    assert 0 <= latency <= (seen_ns - written_ns) / 1e9
    assert total(after, "foresight_kernel_state", foresight_kernel_state="halted") == 1.0
    # Halted, no cycle starts: once the last ones in flight are folded, the counter equals the
    # ledger's cycle rows (one per cycle folded).
    def agree() -> bool:
        rows = k.query("SELECT COUNT(*) AS n FROM cycles")[0]["n"]
        return rows > 0 and total(scrape(url), "foresight_kernel_cycles_total") == rows

    wait_until(agree, timeout=30, what="the cycle counter to equal the ledger's cycles")
    k.stop()
    with pytest.raises(OSError):
        scrape(url)


@pytest.mark.parametrize("launcher", ["runkernel", "direct"])
def test_a_non_loopback_metrics_address_is_refused_at_start(tmp_path, launcher):
    k = KernelProcess(tmp_path / "state", runkernel_args(demo=True, extra=("--metrics-addr", "0.0.0.0:9464")),
                      launcher=launcher, env=kernel_env(), log_path=tmp_path / "kernel.log")
    try:
        k.start(wait=False)
        assert k.wait_exit(timeout=60) == 1
    finally:
        k.cleanup()
    log = k.log_tail()
    assert "--metrics-addr '0.0.0.0:9464' is not a loopback address" in log and "--metrics-allow-remote" in log
    assert not (tmp_path / "state" / "status.json").exists()  # refused before any kernel ran
