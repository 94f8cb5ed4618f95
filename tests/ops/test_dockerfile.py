"""The Dockerfile is linted with the real hadolint and keeps the shape STYLE.md item 10 asks for.

No Docker engine runs here, so the image is written and linted, not built.
"""

from __future__ import annotations

import json
import re

from .conftest import ROOT, run

DOCKERFILE = ROOT / "Dockerfile"


def stages() -> list[list[str]]:
    """Instructions (continuation lines joined) grouped by build stage."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    out: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_hadolint_reports_nothing(hadolint: str) -> None:
    """hadolint (every rule, info level and up) finds nothing to say about the Dockerfile."""
    done = run(hadolint, "--failure-threshold", "info", "--no-color", str(DOCKERFILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_locked_dependencies_install_in_their_own_layer_before_the_project() -> None:
    """Deps come from uv.lock alone (cached layer); the project is copied and synced after."""
    builder = next(s for s in stages() if " AS builder" in s[0])
    joined = "\n".join(builder)
    deps = joined.index("uv sync --frozen --no-install-project --no-dev")
    assert "source=uv.lock" in joined[:deps]
    project_copy = joined.index("COPY worker")
    assert deps < project_copy < joined.rindex("uv sync --frozen --no-dev")


def test_runtime_stage_is_slim_non_root_and_exec_form() -> None:
    """Final stage: slim Python, only the venv, numeric USER, exec-form `python -m worker run`."""
    final = stages()[-1]
    text = "\n".join(final)
    assert "-slim" in DOCKERFILE.read_text().split("ARG PYTHON_IMAGE=")[1].splitlines()[0]
    assert [ln for ln in final if ln.startswith("COPY")] == [
        "COPY --from=builder --chown=0:0 /app/.venv /app/.venv"
    ]
    users = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    assert users and re.fullmatch(r"10001(:10001)?", users[-1])
    entry = next(ln for ln in final if ln.startswith("ENTRYPOINT "))
    cmd = next(ln for ln in final if ln.startswith("CMD "))
    assert json.loads(entry.split(" ", 1)[1]) == ["python", "-m", "worker"]
    assert json.loads(cmd.split(" ", 1)[1]) == ["run"]
    assert "EXPOSE 9464" in final
    assert "PYTHONDONTWRITEBYTECODE=1" in text and "PYTHONUNBUFFERED=1" in text
    for tool in ("uv ", "/bin/uv", "apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in text, f"{tool!r} in the runtime stage"


def test_build_context_is_only_what_the_build_needs() -> None:
    """.dockerignore excludes everything but the project files the builder copies."""
    rules = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and ln[0] != "#"]
    assert rules[0] == "**"
    assert {"!pyproject.toml", "!uv.lock", "!README.md", "!worker/"} <= set(rules)
