"""The Grafana dashboard: valid JSON, the panels ops asked for, and only real metric names.

Every `bulkops_*` name in its queries (and in the alert rules) must be a metric that
worker/metrics.py defines, after stripping the suffixes prometheus-client adds to counters and
histograms; every query must parse as PromQL (promtool).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, ROOT, Renderer, one, run

DASHBOARD = CHART / "dashboards" / "bulkops.json"
METRIC = re.compile(r"\bbulkops_[a-z0-9_]+")
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def defined_metrics() -> set[str]:
    """Metric names registered in worker/metrics.py (the first argument of each constructor)."""
    source = (ROOT / "worker" / "metrics.py").read_text()
    return set(re.findall(r"""["'](bulkops_[a-z0-9_]+)["']""", source))


def base_name(sample: str, known: set[str]) -> str:
    if sample in known:
        return sample
    for suffix in SUFFIXES:
        if sample.endswith(suffix) and sample.removesuffix(suffix) in known:
            return sample.removesuffix(suffix)
    return sample


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def test_dashboard_is_importable_json_with_a_datasource_variable() -> None:
    """uid/title/panels present; queries use the ${datasource} variable, not a fixed uid."""
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


@pytest.mark.parametrize(
    ("title_word", "metric"),
    [
        ("Throughput", "bulkops_item_outcomes_total"),
        ("Outcomes by status", "bulkops_item_outcomes_total"),
        ("Batch fill", "bulkops_batch_fill_ratio_bucket"),
        ("Rate-limit use", "bulkops_rate_limit_allowed_requests"),
        ("429", "bulkops_api_rate_limited_total"),
        ("API latency", "bulkops_api_request_duration_seconds_bucket"),
        ("End-to-end latency", "bulkops_end_to_end_latency_seconds_bucket"),
        ("Pending items", "bulkops_pending_items"),
        ("in-flight batches", "bulkops_inflight_batches"),
        ("Dead letters", "bulkops_dead_lettered_messages_total"),
        ("Request queue depth", "rabbitmq_detailed_queue_messages_ready"),
        ("Paused scopes", "bulkops_paused_scopes"),
        ("held by pauses", "bulkops_held_items"),
    ],
)
def test_dashboard_has_the_panels_ops_asked_for(title_word: str, metric: str) -> None:
    """Each question from the issue has a panel whose query reads the right metric."""
    matching = [p for p in panels() if title_word.lower() in p["title"].lower()]
    assert matching, f"no panel titled like {title_word!r}"
    queries = " ".join(t["expr"] for p in matching for t in p["targets"])
    assert metric in queries


def test_dashboard_metric_names_exist_in_worker_metrics() -> None:
    """No panel queries a bulkops_ metric the worker does not export."""
    known = defined_metrics()
    assert len(known) >= 15, "could not read the metric names from worker/metrics.py"
    used = {base_name(m, known) for e in exprs() for m in METRIC.findall(e)}
    assert used, "the dashboard queries no bulkops_ metric"
    assert used - known == set()


def test_alert_metric_names_exist_in_worker_metrics(render: Renderer) -> None:
    """No alert reads a bulkops_ metric the worker does not export."""
    known = defined_metrics()
    manifests = render.values("monitoring-keda-values.yaml")
    rules = one(manifests, "PrometheusRule")["spec"]["groups"][0]["rules"]
    used = {base_name(m, known) for r in rules for m in METRIC.findall(r["expr"])}
    assert used and used - known == set()


def test_dashboard_queries_parse_as_promql(promtool: str, tmp_path: Path) -> None:
    """Every query, with Grafana's variables filled in, is valid PromQL for promtool."""
    fill = {
        "$__rate_interval": "5m",
        "$namespace": "ns",
        "$job": "job",
        "$queue": "bulkops.requests",
        "$dlq": "bulkops.requests.dlq",
    }
    rules = []
    for i, expr in enumerate(exprs()):
        for var, value in fill.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run(promtool, "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
