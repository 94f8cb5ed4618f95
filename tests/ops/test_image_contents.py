"""What the image carries: the project's wheel (the Dockerfile installs it with a non-editable
`uv sync`), built here with `uv build` and inspected, since no Docker engine runs here.

The emulator and the demo are development tools: they must not come back into the image,
and there `python -m worker emulator|demo` says so instead of failing with a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT, find_tool

DEV_ONLY = ("worker/emulator/", "worker/demo.py")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = find_tool("uv", "https://docs.astral.sh/uv/")
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("bulkops-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    into = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(into)
    return into


def test_the_wheel_has_neither_the_emulator_nor_the_demo(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if n.startswith(DEV_ONLY)] == []


def test_the_wheel_has_every_other_module_of_the_package(wheel: Path) -> None:
    """Nothing else is left out: every module of `worker/` but the dev-only ones is there."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "worker").rglob("*.py")
        if not p.relative_to(ROOT).as_posix().startswith(DEV_ONLY)
    }
    assert expected - names == set()


def _python(unpacked: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This interpreter with the unpacked wheel first on the path (ahead of the checkout's
    editable install), run from outside the checkout."""
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=unpacked,
        env=env,
    )


def test_run_imports_from_the_wheel_alone(unpacked: Path) -> None:
    """What `run` needs is in the wheel: the app and everything it imports load from it."""
    code = "import worker, worker.app, worker.__main__; print(worker.__file__)"
    done = _python(unpacked, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(unpacked))


@pytest.mark.parametrize("command", ["emulator", "demo"])
def test_dev_commands_say_they_are_not_installed(unpacked: Path, command: str) -> None:
    done = _python(unpacked, "-m", "worker", command)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"`{command}` is not installed here" in done.stderr
    assert "Traceback" not in done.stderr
