"""deploy/monitoring: the alert rules pass promtool, and every metric they and the
dashboard use is one Engram exports (or a documented external one)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from engram.config import MetricsSettings
from engram.metrics import Metrics

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
# Produced outside the API: node_exporter on the database host, and the backup job.
EXTERNAL = {
    "node_memory_MemTotal_bytes",
    "node_filesystem_size_bytes",
    "engram_backup_failures_total",
    "engram_backup_last_success_timestamp_seconds",
}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum",
            "_created"), "gauge": ("",)}  # fmt: skip
KEYWORDS = {"and", "or", "unless"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
        pytest.skip("promtool is missing (make test installs Debian's prometheus package)")
    return found


def exported() -> set[str]:
    """Every series name a fully configured Engram process can expose."""
    m = Metrics(MetricsSettings(database_memory_bytes=1, storage_capacity_bytes=1))
    m.pool_stats = lambda: {"pool_size": 1, "pool_available": 1, "pool_max": 1}
    names: set[str] = set()
    family: Metric
    for family in m.registry.collect():
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """Series names in a PromQL expression (not functions, keywords or label names)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = re.findall(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\b(?!\s*\()", expr)
    return {w for w in words if w not in KEYWORDS}


@pytest.mark.integration  # promtool comes from apt (make test installs it)
def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(MONITORING / "alerts.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout


@pytest.mark.integration
def test_promtool_rule_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yaml"],
        cwd=MONITORING, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((MONITORING / "alerts_test.yaml").read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert names == fires, f"never shown firing: {names - fires}"
    assert names == quiet, f"never shown quiet: {names - quiet}"


def test_rules_use_only_exported_metrics() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    known = exported() | EXTERNAL
    for group in rules["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - known
            assert not unknown, f"{rule['alert']} uses {unknown}"


def test_dashboard_is_valid_and_uses_exported_metrics() -> None:
    doc = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    known = exported()
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    assert len(doc["panels"]) >= 12 and all(exprs)
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr.replace("$__rate_interval", "5m"))
        assert names, expr
        assert names <= known, f"{expr} uses {names - known}"
        used |= names
    # The dashboard covers every family the issue names.
    for family in ("engram_http_request_duration_seconds_bucket",
                   "engram_search_duration_seconds_bucket", "engram_searches_total",
                   "engram_searches_with_hits_total", "engram_db_connections",
                   "engram_pool_utilization_ratio", "engram_vector_index_bytes",
                   "engram_autovacuum_lag_seconds", "engram_table_dead_tuple_ratio",
                   "engram_jobs_queue_depth", "engram_jobs_oldest_age_seconds",
                   "engram_db_longest_query_seconds", "engram_database_size_bytes"):  # fmt: skip
        assert family in used, family
