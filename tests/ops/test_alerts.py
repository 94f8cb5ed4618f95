"""The chart's PrometheusRule: valid for promtool, and each alert fires (or not) on made-up series.

`promtool test rules` evaluates the rendered rules against synthetic series, so the PromQL,
the `for` durations and the labels are exercised, not just parsed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .conftest import NAMESPACE, Renderer, one, run

WORKER = f'namespace="{NAMESPACE}", job="rel-bulkops"'
OP = 'operation="datocms.items.publish", target="main"'


def rule_groups(render: Renderer, *extra: str) -> list[dict[str, Any]]:
    manifests = render.values(
        "defaults-values.yaml", "--set", "prometheusRule.enabled=true", *extra
    )
    groups: list[dict[str, Any]] = one(manifests, "PrometheusRule")["spec"]["groups"]
    return groups


def test_rules_pass_promtool_check(render: Renderer, promtool: str, tmp_path: Path) -> None:
    """promtool accepts the rules (PromQL, durations, annotation templates) as rendered."""
    manifests = render.values("monitoring-keda-values.yaml")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": one(manifests, "PrometheusRule")["spec"]["groups"]}))
    done = run(promtool, "check", "rules", str(rules))
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    assert alerts == {
        "BulkopsItemFailureRatioHigh",
        "BulkopsConsumptionStopped",
        "BulkopsRateLimited",
        "BulkopsDeadLetters",
        "BulkopsJobDeadlineHit",
        "BulkopsPauseTooLong",
    }


def case(eval_time: str, alert: str, series: dict[str, str], labels: dict[str, str] | None) -> dict:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [
            {
                "eval_time": eval_time,
                "alertname": alert,
                "exp_alerts": [] if labels is None else [{"exp_labels": labels}],
            }
        ],
    }


CASES = [
    case(  # half of the items failed for 20 minutes
        "20m",
        "BulkopsItemFailureRatioHigh",
        {
            f'bulkops_item_outcomes_total{{{WORKER}, {OP}, status="failed"}}': "0+10x30",
            f'bulkops_item_outcomes_total{{{WORKER}, {OP}, status="succeeded"}}': "0+10x30",
        },
        {"severity": "warning", "operation": "datocms.items.publish", "target": "main"},
    ),
    case(  # 1% failures stay under the 5% threshold
        "20m",
        "BulkopsItemFailureRatioHigh",
        {
            f'bulkops_item_outcomes_total{{{WORKER}, {OP}, status="failed"}}': "0+1x30",
            f'bulkops_item_outcomes_total{{{WORKER}, {OP}, status="succeeded"}}': "0+99x30",
        },
        None,
    ),
    case(  # messages wait in the queue and nothing is consumed
        "20m",
        "BulkopsConsumptionStopped",
        {
            f"bulkops_messages_consumed_total{{{WORKER}, {OP}}}": "100+0x30",
            'rabbitmq_detailed_queue_messages_ready{queue="bulkops.requests"}': "50+0x30",
        },
        {"severity": "critical"},
    ),
    case(  # no worker series at all (every pod gone) while messages wait
        "20m",
        "BulkopsConsumptionStopped",
        {'rabbitmq_detailed_queue_messages_ready{queue="bulkops.requests"}': "50+0x30"},
        {"severity": "critical"},
    ),
    case(  # a backlog that is being consumed is not an alert
        "20m",
        "BulkopsConsumptionStopped",
        {
            f"bulkops_messages_consumed_total{{{WORKER}, {OP}}}": "0+10x30",
            'rabbitmq_detailed_queue_messages_ready{queue="bulkops.requests"}': "50+0x30",
        },
        None,
    ),
    case(  # one 429 a second for 25 minutes
        "25m",
        "BulkopsRateLimited",
        {f'bulkops_api_rate_limited_total{{{WORKER}, target="main"}}': "0+60x40"},
        {"severity": "warning", "target": "main"},
    ),
    case(  # a message dead-lettered a few minutes ago
        "5m",
        "BulkopsDeadLetters",
        {f'bulkops_dead_lettered_messages_total{{{WORKER}, reason="invalid_json"}}': "0 0 0 1 1 1"},
        {"severity": "warning"},
    ),
    case(  # the dead-letter queue holds messages (seen by RabbitMQ)
        "5m",
        "BulkopsDeadLetters",
        {'rabbitmq_detailed_queue_messages_ready{queue="bulkops.requests.dlq"}': "3+0x10"},
        {"severity": "warning"},
    ),
    case(  # a DatoCMS job outlived its deadline
        "5m",
        "BulkopsJobDeadlineHit",
        {f"bulkops_job_timeouts_total{{{WORKER}, {OP}}}": "0 0 1 1 1 1"},
        {"severity": "warning", "operation": "datocms.items.publish", "target": "main"},
    ),
    case(  # a scope of shop paused at t=60s, still paused 2 hours later (threshold 1 h)
        "2h",
        "BulkopsPauseTooLong",
        {f'bulkops_pause_started_seconds{{{WORKER}, target="shop"}}': "60+0x130"},
        {"severity": "warning", "target": "shop"},
    ),
    case(  # paused for 30 minutes only, and a target with no pause (0)
        "30m",
        "BulkopsPauseTooLong",
        {
            f'bulkops_pause_started_seconds{{{WORKER}, target="shop"}}': "60+0x40",
            f'bulkops_pause_started_seconds{{{WORKER}, target="main"}}': "0+0x40",
        },
        None,
    ),
    case(  # a pause resumed after 50 minutes: no alert at 2 h
        "2h",
        "BulkopsPauseTooLong",
        {f'bulkops_pause_started_seconds{{{WORKER}, target="shop"}}': "60+0x50 0+0x80"},
        None,
    ),
]


def test_alerts_fire_exactly_when_they_should(
    render: Renderer, promtool: str, tmp_path: Path
) -> None:
    """Each alert fires on the series that describe its incident, and stays quiet otherwise."""
    groups = rule_groups(render)
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations")  # promtool compares annotations too; the labels suffice here
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": CASES}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    done = run(promtool, "test", "rules", str(tmp_path / "tests.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
