"""``kernelctl status`` and ``kernelctl ledger --json`` read a running kernel's state dir
(the real command, in its own process; kernelctl is the console's command, so it runs with
the console's settings, but these reads touch no database)."""
from __future__ import annotations

import json

import pytest

from tests.support.kernelctl_run import kernelctl

pytestmark = pytest.mark.integration


def test_kernelctl_status_and_ledger_read_what_the_kernel_reports(kernels):
    k = kernels()
    st = k.wait(lambda s: s["ledger"]["fills"] > 0 and s["cycles"]["ran"] > 16, what="a fill")
    out = kernelctl("--state-dir", str(k.state_dir), "status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["pid"] == k.pid and len(status["slots"]) == 16

    human = kernelctl("--state-dir", str(k.state_dir), "status")
    assert human.returncode == 0, human.stderr
    assert "btc-5m" in human.stdout and f"pid {k.pid}" in human.stdout

    led = kernelctl("--state-dir", str(k.state_dir), "ledger", "--json")
    assert led.returncode == 0, led.stderr
    ledger = json.loads(led.stdout)
    assert ledger["summary"]["fills"] >= st["ledger"]["fills"]
    for slot, pos in ledger["positions"].items():
        bought = sum(f["qty"] for f in ledger["fills"] if f["slot"] == slot and f["side"] == "buy")
        sold = sum(f["qty"] for f in ledger["fills"] if f["slot"] == slot and f["side"] == "sell")
        assert pos["qty"] == pytest.approx(bought - sold, abs=1e-9)


def test_kernelctl_status_on_a_dir_with_no_kernel_is_a_clear_error(tmp_path):
    out = kernelctl("--state-dir", str(tmp_path), "status")
    assert out.returncode != 0
    assert "no status.json" in out.stderr
