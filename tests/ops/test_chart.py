"""The Helm chart, rendered by the real Helm engine under every ci/ values file.

Built-in kinds are validated against the Kubernetes JSON schemas (kubernetes-validate, strict);
the CRDs (ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication) against minimal
schemas of the fields this chart sets. Then the fields ops rely on are asserted.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from worker.addresses import split_urls
from worker.settings import Settings

from .conftest import CHART, CI_VALUES, NAMESPACE, Manifests, Renderer, container, kinds, one, run

K8S_VERSION = "1.30"
FULLNAME = "rel-bulkops"
CI_NAMES = [p.name for p in CI_VALUES]

_STR = {"type": "string", "minLength": 1}
_NAMED = {"type": "object", "required": ["name"], "properties": {"name": _STR}}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": {"type": "object", "required": ["matchLabels"]},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["port", "path"],
                    "properties": {"port": _STR, "path": _STR, "interval": _STR},
                },
            },
        },
    },
    "PrometheusRule": {
        "required": ["groups"],
        "properties": {
            "groups": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "properties": {
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["alert", "expr", "labels", "annotations"],
                                "additionalProperties": False,
                                "properties": {
                                    "alert": _STR,
                                    "expr": _STR,
                                    "for": _STR,
                                    "labels": {"type": "object"},
                                    "annotations": {"type": "object"},
                                },
                            },
                        }
                    },
                },
            }
        },
    },
    "ScaledObject": {
        "required": ["scaleTargetRef", "triggers"],
        "properties": {
            "scaleTargetRef": _NAMED,
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["type", "metadata", "authenticationRef"],
                    "properties": {
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "required": ["secretTargetRef"],
        "properties": {
            "secretTargetRef": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["parameter", "name", "key"],
                    "additionalProperties": False,
                    "properties": {"parameter": _STR, "name": _STR, "key": _STR},
                },
            }
        },
    },
}
CRD_API = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
}


def validate(manifest: dict[str, Any]) -> None:
    kind = manifest["kind"]
    if kind in CRD_SCHEMAS:
        assert manifest["apiVersion"] == CRD_API[kind]
        assert manifest["metadata"]["name"] and manifest["metadata"]["namespace"] == NAMESPACE
        jsonschema.validate(manifest["spec"], {"type": "object", **CRD_SCHEMAS[kind]})
    else:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def env_of(manifests: Manifests) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(manifests).get("env", [])}


def secret_refs(manifests: Manifests) -> dict[str, tuple[str, str]]:
    """env name -> (secret name, key) of every secretKeyRef of the worker container."""
    return {
        name: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for name, e in env_of(manifests).items()
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def pod_env(manifests: Manifests) -> dict[str, str]:
    """The worker's environment as the kubelet would build it from the ConfigMap and Secret."""
    data = dict(one(manifests, "ConfigMap", FULLNAME)["data"])
    secret = one(manifests, "Secret")
    for name, (_, key) in secret_refs(manifests).items():
        data[name] = base64.b64decode(secret["data"][key]).decode()
    return data


@pytest.mark.parametrize("values", CI_NAMES)
def test_helm_lint_is_clean(helm: str, values: str) -> None:
    """`helm lint --strict` (schema included) passes with every ci/ values file."""
    done = run(helm, "lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", CI_NAMES)
def test_manifests_validate_against_kubernetes_schemas(render: Renderer, values: str) -> None:
    """Every rendered object is valid for Kubernetes 1.30 (strict: no unknown fields)."""
    manifests = render.values(values)
    assert {"Deployment", "ConfigMap", "Service", "ServiceAccount"} <= kinds(manifests)
    for manifest in manifests:
        validate(manifest)


@pytest.mark.parametrize("values", CI_NAMES)
def test_probes_hit_health_endpoints_on_the_metrics_port(render: Renderer, values: str) -> None:
    """Liveness GETs /healthz and readiness /readyz on the port named metrics (9464)."""
    worker = container(render.values(values))
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert worker["args"] == ["run"] and "command" not in worker


@pytest.mark.parametrize("values", CI_NAMES)
def test_pod_and_container_are_hardened(render: Renderer, values: str) -> None:
    """Non-root uid 10001, RuntimeDefault seccomp, read-only root, no escalation, no caps."""
    manifests = render.values(values)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(manifests)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container(manifests)["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert pod["automountServiceAccountToken"] is False
    assert one(manifests, "ServiceAccount")["automountServiceAccountToken"] is False


@pytest.mark.parametrize("values", CI_NAMES)
def test_grace_period_outlasts_the_drain_timeout(render: Renderer, values: str) -> None:
    """terminationGracePeriodSeconds exceeds BULKOPS_DRAIN_TIMEOUT_SECONDS by 10 s or more."""
    manifests = render.values(values)
    drain = float(one(manifests, "ConfigMap", FULLNAME)["data"]["BULKOPS_DRAIN_TIMEOUT_SECONDS"])
    grace = one(manifests, "Deployment")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace >= drain + 10


def test_grace_period_defaults_to_drain_plus_margin(render: Renderer) -> None:
    """Unset, the grace period is ceil(drainTimeoutSeconds) + 30."""
    manifests = render.values("defaults-values.yaml", "--set-json", "drainTimeoutSeconds=90.5")
    spec = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == math.ceil(90.5) + 30


def test_a_grace_period_shorter_than_the_drain_is_refused(render: Renderer) -> None:
    """An explicit grace period that would SIGKILL mid-drain fails the render."""
    done = render.attempt(
        "-f",
        str(CHART / "ci" / "defaults-values.yaml"),
        "--set",
        "drainTimeoutSeconds=120",
        "--set",
        "terminationGracePeriodSeconds=100",
    )
    assert done.returncode != 0
    assert "must exceed drainTimeoutSeconds" in done.stderr


def test_chart_secret_holds_credentials_and_configmap_does_not(render: Renderer) -> None:
    """The chart's Secret has the AMQP URL and every target credential; env refs match keys."""
    manifests = render.values("multi-target-values.yaml")
    secret = one(manifests, "Secret", FULLNAME)
    expected = {
        "BULKOPS_AMQP_URL",
        "BULKOPS_TARGETS__MAIN__API_TOKEN",
        "BULKOPS_TARGETS__BLOG_SITE__API_TOKEN",
        "BULKOPS_TARGETS__CATALOG-EU__API_KEY_ID",
        "BULKOPS_TARGETS__CATALOG-EU__API_SECRET",
    }
    assert set(secret["data"]) == expected
    assert secret_refs(manifests) == {k: (FULLNAME, k) for k in expected}
    config = one(manifests, "ConfigMap", FULLNAME)["data"]
    text = json.dumps(config)
    for value in ("change-me", "dato-token-main", "dato-token-blog", "br-key-id", "br-secret"):
        assert value not in text
    assert (
        config["BULKOPS_TARGETS__CATALOG-EU__PROJECT_ID"] == "11111111-2222-3333-4444-555555555555"
    )
    assert config["BULKOPS_TARGETS__BLOG_SITE__RATE_LIMIT"] == "30/3s"
    assert config["BULKOPS_MAX_INFLIGHT_BATCHES"] == "32"
    worker = container(manifests)
    assert worker["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]


def test_existing_secret_is_referenced_and_no_secret_is_rendered(render: Renderer) -> None:
    """With existingSecret the chart makes no Secret and reads each key from the user's one."""
    manifests = render.values("existing-secret-values.yaml")
    assert "Secret" not in kinds(manifests)
    assert secret_refs(manifests) == {
        key: ("bulkops-credentials", key)
        for key in (
            "BULKOPS_AMQP_URL",
            "BULKOPS_TARGETS__MAIN__API_TOKEN",
            "BULKOPS_TARGETS__CATALOG-EU__API_KEY_ID",
            "BULKOPS_TARGETS__CATALOG-EU__API_SECRET",
        )
    }
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" in annotations and "checksum/secret" not in annotations


def test_rendered_environment_is_accepted_by_the_worker_settings(
    render: Renderer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ConfigMap + Secret, as env, build the worker's Settings with every target and secret."""
    env = pod_env(render.values("multi-target-values.yaml"))
    for name in [k for k in os.environ if k.startswith("BULKOPS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no stray .env
    settings = Settings()
    assert set(settings.targets) == {"main", "blog_site", "catalog-eu"}
    assert settings.targets["main"].kind == "datocms"
    assert settings.targets["main"].api_token.get_secret_value() == "dato-token-main"  # type: ignore[union-attr]
    catalog = settings.targets["catalog-eu"]
    assert catalog.kind == "bloomreach" and catalog.project_id.startswith("1111")  # type: ignore[union-attr]
    assert catalog.api_secret.get_secret_value() == "br-secret"  # type: ignore[union-attr]
    assert str(settings.targets["blog_site"].rate) == "30/3s"
    assert settings.amqp_url.get_secret_value().startswith("amqps://")
    assert settings.drain_timeout_seconds == 60
    assert settings.log_level == "DEBUG"
    assert settings.linger_seconds == 0.5
    assert settings.max_inflight_batches == 32


@pytest.mark.parametrize(
    "given",
    [
        "{amqp://u:p@rabbit-0:5672/,amqp://u:p@rabbit-1:5672/}",  # a list
        "amqp://u:p@rabbit-0:5672/\\,amqp://u:p@rabbit-1:5672/",  # one comma-separated string
    ],
)
def test_a_list_of_broker_addresses_reaches_the_worker_comma_separated(
    render: Renderer, given: str
) -> None:
    """secrets.amqpUrl as a list (or a comma-separated string) becomes one comma-separated
    BULKOPS_AMQP_URL, which the worker splits into the cluster's addresses in order."""
    env = pod_env(render.values("defaults-values.yaml", "--set", f"secrets.amqpUrl={given}"))
    assert split_urls(env["BULKOPS_AMQP_URL"]) == [
        "amqp://u:p@rabbit-0:5672/", "amqp://u:p@rabbit-1:5672/",
    ]  # fmt: skip


def test_config_change_rolls_the_pods(render: Renderer) -> None:
    """The pod template carries checksums of the ConfigMap and Secret, so changes restart pods."""

    def checksums(*extra: str) -> dict[str, str]:
        manifests = render.values("defaults-values.yaml", *extra)
        return dict(one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"])

    base = checksums()
    assert checksums("--set", "config.logLevel=DEBUG")["checksum/config"] != base["checksum/config"]
    changed = checksums("--set", "secrets.amqpUrl=amqp://other:5672/")
    assert changed["checksum/secret"] != base["checksum/secret"]


def test_service_servicemonitor_and_pdb_select_the_worker_pods(render: Renderer) -> None:
    """Service, ServiceMonitor and PDB all select the pods; the monitor scrapes port metrics."""
    manifests = render.values("monitoring-keda-values.yaml")
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(manifests, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = one(manifests, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pdb = one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_keda_scales_the_deployment_on_the_request_queue(render: Renderer) -> None:
    """ScaledObject: rabbitmq QueueLength on the request queue and, partitioned, on every
    partition queue (where the backlog waits then), host from the Secret; the Deployment
    leaves replicas to KEDA."""
    manifests = render.values("monitoring-keda-values.yaml")
    scaled = one(manifests, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    triggers = scaled["spec"]["triggers"]
    queues = ["bulkops.requests"] + [f"bulkops.requests.p{i}" for i in range(8)]
    assert [t["metadata"]["queueName"] for t in triggers] == queues
    trigger = triggers[0]
    assert {t["type"] for t in triggers} == {"rabbitmq"}
    assert trigger["metadata"] == {
        "protocol": "amqp",
        "mode": "QueueLength",
        "value": "50",
        "queueName": "bulkops.requests",
    }
    auth = one(manifests, "TriggerAuthentication")
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": FULLNAME, "key": "BULKOPS_AMQP_URL"}
    ]
    assert "replicas" not in one(manifests, "Deployment")["spec"]
    assert one(render.values("multi-target-values.yaml"), "Deployment")["spec"]["replicas"] == 3


def test_opt_in_resources_are_off_by_default(render: Renderer) -> None:
    """ServiceMonitor, PrometheusRule and KEDA objects need their CRDs, so they are opt-in."""
    present = kinds(render.values("defaults-values.yaml"))
    assert not present & {
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
        "TriggerAuthentication",
    }
    assert "PodDisruptionBudget" in present


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(render: Renderer) -> None:
    """The dashboard ConfigMap has grafana_dashboard: "1" and the JSON file verbatim."""
    manifests = render.values("monitoring-keda-values.yaml")
    cm = one(manifests, "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Workers"}
    shipped = (CHART / "dashboards" / "bulkops.json").read_text()
    assert json.loads(cm["data"]["bulkops.json"]) == json.loads(shipped)


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("replicaCount=-1", "replicaCount"),
        ("targets.Main.kind=datocms", "Main"),
        ("targets.main.kind=contentful", "kind"),
        ("config.logLevel=TRACE", "logLevel"),
        ("config.httpPort=70000", "httpPort"),
        ("secrets.amqpUrl=http://rabbit:5672/", "amqpUrl"),
        ("secrets.amqpUrl={amqp://rabbit:5672/,http://other:5672/}", "amqpUrl"),
        ("drainTimeoutSeconds=0", "drainTimeoutSeconds"),
        ("surprise=1", "surprise"),
        ("keda.protocol=kafka", "protocol"),
    ],
)
def test_schema_rejects_bad_values(render: Renderer, setting: str, complaint: str) -> None:
    """values.schema.json refuses values the worker or Kubernetes would choke on."""
    done = render.attempt("-f", str(CHART / "ci" / "defaults-values.yaml"), "--set", setting)
    assert done.returncode != 0, f"{setting} was accepted"
    assert complaint in done.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ((), "secrets.amqpUrl"),
        (
            ("--set", "secrets.amqpUrl=amqp://r/", "--set", "targets.main.kind=datocms"),
            "targets.main.apiToken",
        ),
    ],
)
def test_missing_credentials_fail_the_render(
    render: Renderer, args: tuple[str, ...], complaint: str
) -> None:
    """Without existingSecret, the AMQP URL and each target's credentials are required."""
    done = render.attempt(*args)
    assert done.returncode != 0
    assert complaint in done.stderr


@pytest.mark.parametrize(
    "amqp",
    ["secrets.amqpUrl={amqp://u:p@a:5672/,amqp://u:p@b:5672/}",
     "secrets.amqpUrl=amqp://u:p@a:5672/\\,amqp://u:p@b:5672/"],
)  # fmt: skip
def test_keda_refuses_a_list_of_broker_addresses_as_its_host(render: Renderer, amqp: str) -> None:
    """KEDA takes one host: with several addresses in the chart-made Secret and the default
    keda.hostSecretKey, the render fails and says what to do (KEDA would otherwise get a
    comma-joined string, reach no broker, and scale nothing)."""
    done = render.attempt(
        "-f", str(CHART / "ci" / "monitoring-keda-values.yaml"), "--set", amqp
    )
    assert done.returncode != 0, "a list of addresses was accepted as KEDA's host"
    assert "keda.hostSecretKey" in done.stderr


def test_values_yaml_comments_every_key() -> None:
    """Each key in values.yaml has a comment right above it, or sits under a commented key."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    missing = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while documented and documented[-1][0] >= indent:
            documented.pop()
        here = i > 0 and lines[i - 1].strip().startswith("#")
        ok = here or any(flag for _, flag in documented)
        documented.append((indent, ok))
        if not ok:
            missing.append(stripped)
    assert missing == []


def test_several_replicas_without_partitions_fail_to_render(render: Renderer) -> None:
    """replicaCount > 1 (or KEDA above 1) with partitions 0 would multiply the rate limit by
    the replica count: the chart refuses it with a pointer to the fix."""
    done = render.attempt(
        "-f", str(CHART / "ci" / "multi-target-values.yaml"), "--set", "config.partitions=0"
    )
    assert done.returncode != 0
    assert "config.partitions" in done.stderr
    configmap = one(render.values("multi-target-values.yaml"), "ConfigMap", FULLNAME)
    assert configmap["data"]["BULKOPS_PARTITIONS"] == "6"
