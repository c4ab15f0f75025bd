"""docs/monitoring/: the Prometheus alert rules pass ``promtool check rules`` and their own
``promtool test rules`` cases (each alert fires on made-up series, none on a healthy
kernel); the Grafana dashboard is valid JSON whose every query is valid PromQL (promtool
checks them as recording rules) and names only metrics the kernel or the console exports.

promtool comes from Debian's ``prometheus`` package (scripts/system-deps.sh)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kernel import metrics as kernel_metrics
from kernel.run_state import RunState

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "monitoring"
ALERTS = DOCS / "alerts.yml"
DASHBOARD = DOCS / "grafana-dashboard.json"
METRIC = re.compile(r"\b(foresight_[a-z0-9_]+)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",),
            "stateset": ("",)}


def promtool(*args: str, cwd: Path = DOCS) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: scripts/system-deps.sh installs Debian's prometheus package"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def sample_names(registry) -> set[str]:
    """Every sample name a registry's families can produce (a family with no series yet included)."""
    return {family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]}


class _NoHalt:
    engaged = False


@pytest.fixture
def exported(db) -> set[str]:
    """What the kernel's and the console's registries export, the kernel's state view attached."""
    from foresight_site.metrics import REGISTRY as console_registry

    slots: dict = {}
    kernel_metrics.VIEW.attach(slots=slots, run_state=RunState(), halt=_NoHalt())
    try:
        kernel = sample_names(kernel_metrics.REGISTRY)
    finally:
        kernel_metrics.VIEW.detach(slots=slots)
    return kernel | sample_names(console_registry)


def dashboard_targets() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] if p["type"] != "row" for t in p["targets"]]


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_the_alert_rules_pass_promtool_check_rules():
    done = promtool("check", "rules", ALERTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_each_alert_fires_in_its_promtool_test_and_none_on_a_healthy_kernel():
    done = promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    tested = yaml.safe_load((DOCS / "alerts.test.yml").read_text())
    firing = {case["alertname"] for test in tested["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    asked = {"ForesightKernelDown", "ForesightKernelNotReporting", "ForesightKernelHalted", "ForesightCyclesMissed",
             "ForesightReloadFailed"}
    assert asked <= firing <= {r["alert"] for r in alert_rules()}


def test_a_broken_rule_file_fails_the_check(tmp_path):
    """The check above can fail: promtool refuses a rule whose expression is not PromQL."""
    (tmp_path / "bad.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "Broken", "expr": "sum by (le (foresight_kernel_tick"}]}]}))
    done = promtool("check", "rules", "bad.yml", cwd=tmp_path)
    assert done.returncode != 0


def test_the_dashboard_is_a_grafana_dashboard_with_the_panels_asked_for():
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"] for v in board["templating"]["list"]}
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and "datasource" in variables
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    exprs = " ".join(expr for _, expr in dashboard_targets())
    for wanted in ("foresight_kernel_cycle_start_lag_seconds_bucket", "foresight_kernel_cycles_missed_total",
                   "foresight_kernel_halts_total", "foresight_kernel_reloads_total", "foresight_kernel_slot_equity"):
        assert wanted in exprs, f"a panel for {wanted}"


def test_every_dashboard_query_is_valid_promql(tmp_path):
    rules = [{"record": f"dashboard:panel_{i}", "expr": expr.replace("$__rate_interval", "5m")
              .replace("$instance", ".*")} for i, (_, expr) in enumerate(dashboard_targets())]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_named_in_the_dashboard_and_the_alerts_is_exported(exported):
    assert "foresight_kernel_cycles_total" in exported and "foresight_console_requests_total" in exported
    named = {(title, m) for title, expr in dashboard_targets() for m in METRIC.findall(expr)}
    named |= {(rule["alert"], m) for rule in alert_rules() for m in METRIC.findall(rule["expr"])}
    unknown = sorted((where, m) for where, m in named if m not in exported)
    assert unknown == [], unknown
