"""The kernel's Prometheus metrics (kernel/metrics.py): they move when the rooms act.

An in-process kernel on a ManualClock serves them on a loopback port (port 0: status.json
says which); each test scrapes over HTTP, parses with prometheus-client's own parser, and
compares the change between two scrapes with what the ledger, the strategy's rules or the
test's own arithmetic say should have happened. The metrics are process-wide counters, so
every assertion is on a difference between two scrapes."""
from __future__ import annotations

import os
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kernel.control import atomic_write_json
from kernel.errors import OperationalError
from kernel.metrics import ALLOW_REMOTE_ENV, MetricsAddressRefused, metrics_address_parse
from kernel.protocol import Command
from tests.kernel.kernel_driver import M5, Driver
from tests.support.strategy_sources import HELPER_SYNTAX_ERROR, bare_helper_source, tagged_hold_source


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def served(tmp_path, strategies):
    d = Driver(tmp_path / "state", strategies, metrics_addr="127.0.0.1:0")
    yield d
    d.close()


def test_port_zero_picks_a_port_that_status_json_names_and_shutdown_closes_it(served):
    url = served.kernel.snapshot()["metrics_url"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    assert int(url.split(":")[2].split("/")[0]) > 0  # the port picked, not the 0 asked for
    samples = scrape(url)
    assert value(samples, "foresight_kernel_state", foresight_kernel_state="running") == 1.0
    assert value(samples, "foresight_kernel_state", foresight_kernel_state="halted") == 0.0
    served.kernel.shutdown()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)


def test_without_metrics_addr_nothing_listens(driver):
    assert driver.kernel.snapshot()["metrics_url"] is None
    assert driver.kernel.metrics_exporter is None


def test_cycles_orders_fills_and_positions_move_with_the_ledger(served):
    served.add_slot("btc-5m", "flip")
    url = served.kernel.snapshot()["metrics_url"]
    before = scrape(url)
    served.advance(4 * M5)
    after = scrape(url)
    cycles = served.cycles("btc-5m")
    ran = {r["result"] for r in cycles}
    assert len(cycles) >= 4 and ran <= {"enter", "exit"}, cycles  # flip: an order every cycle
    for result in ("enter", "exit"):
        n = sum(1 for r in cycles if r["result"] == result)
        assert (value(after, "foresight_kernel_cycles_total", timeframe="5m", result=result)
                - value(before, "foresight_kernel_cycles_total", timeframe="5m", result=result)) == n
    grew = lambda name, **kw: value(after, name, **kw) - value(before, name, **kw)  # noqa: E731
    assert grew("foresight_kernel_cycle_start_lag_seconds_count", timeframe="5m") == len(cycles)
    assert grew("foresight_kernel_cycle_duration_seconds_count", timeframe="5m") == len(cycles)
    # The lag recorded is the ledger's (candle close → start), in seconds at speed 1.
    lag_s = sum(r["lag_ms"] for r in cycles) / 1000.0
    assert grew("foresight_kernel_cycle_start_lag_seconds_sum", timeframe="5m") == pytest.approx(lag_s)
    entries = sum(1 for r in cycles if r["result"] == "enter")
    exits = sum(1 for r in cycles if r["result"] == "exit")
    assert grew("foresight_kernel_orders_total", intent="entry", side="buy", status="filled") == entries
    assert grew("foresight_kernel_orders_total", intent="exit", side="sell", status="filled") == exits
    # The paper broker fills each market order in one fill.
    assert grew("foresight_kernel_fills_total", side="buy") == entries
    assert grew("foresight_kernel_fills_total", side="sell") == exits
    slot = served.slot("btc-5m")
    key = dict(slot="btc-5m", symbol="BTC/USDT", strategy="flip", timeframe="5m")
    assert value(after, "foresight_kernel_slot_position_qty", **key) == pytest.approx(slot["position"]["qty"])
    assert value(after, "foresight_kernel_slot_realized_pnl", **key) == pytest.approx(
        slot["position"]["realized_pnl"])
    assert value(after, "foresight_kernel_slots") == 1.0
    assert value(after, "foresight_kernel_tick") > value(before, "foresight_kernel_tick")


def test_a_clock_jump_counts_missed_cycles_per_timeframe(served):
    served.add_slot("btc-5m", "tagged")
    served.advance(M5)
    url = served.kernel.snapshot()["metrics_url"]
    before = scrape(url)
    missed_before = served.slot("btc-5m")["missed_cycles"]
    served.advance(4 * M5, step_ms=4 * M5)  # four closes pass at once: one runs, three are missed
    after = scrape(url)
    missed = served.slot("btc-5m")["missed_cycles"] - missed_before
    assert missed == 3
    assert (value(after, "foresight_kernel_cycles_missed_total", timeframe="5m")
            - value(before, "foresight_kernel_cycles_missed_total", timeframe="5m")) == 3


def test_a_halt_in_control_json_counts_with_its_latency_and_a_release_counts(served):
    served.add_slot("btc-5m", "flip")
    served.advance(M5)
    k = served.kernel
    url = k.snapshot()["metrics_url"]
    before = scrape(url)
    atomic_write_json(served.state_dir / "control.json", {"halt": True})
    written_ns = os.stat(served.state_dir / "control.json").st_mtime_ns
    k.tick_once()
    acted_by_ns = time.time_ns()
    after = scrape(url)
    assert k.snapshot()["state"] == "halted"
    assert value(after, "foresight_kernel_halts_total", source="control.json") - value(
        before, "foresight_kernel_halts_total", source="control.json") == 1
    assert value(after, "foresight_kernel_halt_latency_seconds_count") - value(
        before, "foresight_kernel_halt_latency_seconds_count") == 1
    # The one sample: the file's mtime to the gate closing, no longer than the mtime to after the tick.
    sample = value(after, "foresight_kernel_halt_latency_seconds_sum") - value(
        before, "foresight_kernel_halt_latency_seconds_sum")
    assert 0 <= sample <= (acted_by_ns - written_ns) / 1e9
    assert value(after, "foresight_kernel_state", foresight_kernel_state="halted") == 1.0
    # The gate refuses a strategy order now, counted by reason.
    refused_before = value(after, "foresight_kernel_gate_refusals_total", reason="halted")
    slot = k.slots["btc-5m"]
    res = k.execution.send(slot=slot, cfg=slot.config, intent="entry", side="buy", qty=0.001, price=40_000.0,
                           candle_ms=None, key="by-hand", job=None)
    assert res["status"] == "refused" and res["reason"] == "halted"
    assert value(scrape(url), "foresight_kernel_gate_refusals_total", reason="halted") == refused_before + 1
    atomic_write_json(served.state_dir / "control.json", {"halt": False, "commands": [
        Command(id="rel-1", action="release").model_dump(mode="json")]})
    served.settle()
    assert served.result("rel-1")["result"] == "applied"
    final = scrape(url)
    assert value(final, "foresight_kernel_halt_releases_total") - value(
        after, "foresight_kernel_halt_releases_total") == 1
    assert value(final, "foresight_kernel_state", foresight_kernel_state="paused") == 1.0


def test_risk_refusals_count_by_reason(served):
    # An order of 500 against a limit of 100: every entry the strategy wants is refused for max_notional.
    r = served.command("slot.add", "tiny", id="tiny", symbol="BTC/USDT", timeframe="5m", strategy="flip",
                       order_notional=500.0, max_notional=100.0)
    assert r["result"] == "applied", r
    url = served.kernel.snapshot()["metrics_url"]
    before = scrape(url)
    served.advance(3 * M5)
    after = scrape(url)
    refused = [c for c in served.cycles("tiny") if "refused:max_notional" in (c["result"] or "")]
    assert len(refused) >= 3
    assert value(after, "foresight_kernel_gate_refusals_total", reason="max_notional") - value(
        before, "foresight_kernel_gate_refusals_total", reason="max_notional") == len(refused)
    assert value(after, "foresight_kernel_orders_total", intent="entry", side="buy", status="refused") - value(
        before, "foresight_kernel_orders_total", intent="entry", side="buy", status="refused") == len(refused)


def test_reload_results_count_by_outcome(served, strategies):
    served.add_slot("btc-5m", "tagged")
    url = served.kernel.snapshot()["metrics_url"]
    before = scrape(url)
    assert served.command("reload", strategy="tagged")["detail"]["strategies"][0]["result"] == "unchanged"
    (strategies / "tagged.py").write_text(tagged_hold_source(tag="v2"))
    (strategies / "tag_helper.py").write_text(bare_helper_source(tag="v2"))
    assert served.command("reload", strategy="tagged")["result"] == "applied"
    (strategies / "tag_helper.py").write_text(HELPER_SYNTAX_ERROR)
    assert served.command("reload", strategy="tagged")["result"] == "rejected"
    after = scrape(url)
    for result in ("unchanged", "loaded", "failed"):
        assert value(after, "foresight_kernel_reloads_total", result=result) - value(
            before, "foresight_kernel_reloads_total", result=result) == 1, result
    # The one swap waited for the reload lock: one sample.
    assert value(after, "foresight_kernel_reload_lock_wait_seconds_count") - value(
        before, "foresight_kernel_reload_lock_wait_seconds_count") == 1


def test_heartbeat_and_equity_follow_the_published_status(served):
    url = served.kernel.snapshot()["metrics_url"]
    t0 = time.time()
    served.kernel.status.publish()
    samples = scrape(url)
    assert t0 <= value(samples, "foresight_kernel_heartbeat_timestamp_seconds") <= time.time()
    assert value(samples, "foresight_kernel_cash") == pytest.approx(100_000.0)  # the paper broker's start
    assert value(samples, "foresight_kernel_equity") == pytest.approx(100_000.0)


@pytest.mark.parametrize("addr", ["127.0.0.1:9464", "127.9.9.9:0", "localhost:9464", "[::1]:9464"])
def test_loopback_addresses_are_accepted(addr):
    host, port = metrics_address_parse(addr)
    assert addr.startswith(host) or addr.startswith(f"[{host}]")
    assert port == int(addr.rsplit(":", 1)[1])


@pytest.mark.parametrize("addr", ["0.0.0.0:9464", "10.1.2.3:9464", "[::]:9464", "example.com:9464"])
def test_non_loopback_addresses_are_refused_unless_allowed(addr, monkeypatch):
    monkeypatch.delenv(ALLOW_REMOTE_ENV, raising=False)
    with pytest.raises(MetricsAddressRefused, match="not a loopback address"):
        metrics_address_parse(addr)
    assert metrics_address_parse(addr, allow_remote=True)[1] == 9464
    monkeypatch.setenv(ALLOW_REMOTE_ENV, "1")
    assert metrics_address_parse(addr)[1] == 9464


@pytest.mark.parametrize("addr", ["9464", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000"])
def test_malformed_addresses_are_refused(addr):
    with pytest.raises(MetricsAddressRefused, match="expected HOST:PORT"):
        metrics_address_parse(addr)


def test_a_refused_address_leaves_the_state_dir_free(tmp_path, strategies, monkeypatch):
    monkeypatch.delenv(ALLOW_REMOTE_ENV, raising=False)
    with pytest.raises(OperationalError, match="not a loopback address"):
        Driver(tmp_path / "state", strategies, metrics_addr="0.0.0.0:0")
    d = Driver(tmp_path / "state", strategies)  # the lock was let go: another kernel opens it
    d.close()


def test_an_address_in_use_stops_the_build_and_leaves_the_state_dir_free(tmp_path, strategies):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsAddressRefused, match="cannot listen"):
            Driver(tmp_path / "state", strategies, metrics_addr=f"127.0.0.1:{port}")
    d = Driver(tmp_path / "state", strategies)
    d.close()


def test_a_halt_written_before_the_kernel_started_gives_no_latency_sample(tmp_path, strategies, monkeypatch):
    (tmp_path / "state").mkdir()
    atomic_write_json(tmp_path / "state" / "control.json", {"halt": True})
    # This process's kernel modules loaded after the write, as a kernel restarted onto a halted file.
    monkeypatch.setattr("kernel.metrics._LOADED_NS", time.time_ns())
    d = Driver(tmp_path / "state", strategies, metrics_addr="127.0.0.1:0")
    try:
        url = d.kernel.snapshot()["metrics_url"]
        before = scrape(url)
        d.kernel.tick_once()
        assert d.kernel.snapshot()["state"] == "halted"
        after = scrape(url)
        assert value(after, "foresight_kernel_halts_total", source="control.json") - value(
            before, "foresight_kernel_halts_total", source="control.json") == 1
        assert value(after, "foresight_kernel_halt_latency_seconds_count") == value(
            before, "foresight_kernel_halt_latency_seconds_count")
    finally:
        d.close()
