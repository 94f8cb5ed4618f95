"""The benchmark's small version, end to end, so it never rots. Structural facts only: the
figures themselves depend on the machine and are not asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


def test_small_benchmark_answers_every_id_without_breaching_a_limit(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--small", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| measure" in run.stdout and "(5) latency" in run.stdout
    facts = orjson.loads(out.read_bytes())["facts"]
    assert facts["fast_missing"] == 0
    assert facts["fast_statuses"] == {"succeeded": 600}
    for api in ("datocms", "bloomreach"):
        limited = facts[f"limited_{api}"]
        assert limited["missing"] == 0
        assert limited["breaches"] == 0
        assert limited["429s"] == 0
    assert facts["naive"]["items"] > 0
    bloom = facts["mode_failures_bloomreach"]  # (6): every message replied to, all succeeded
    assert (bloom["missing"], bloom["429s"], bloom["outcomes"]) == (0, 0, 0)
    assert bloom["statuses"] == {"succeeded": 4_000, "failed": 0, "rejected": 0}
    dato = facts["mode_failures_datocms"]
    assert (dato["429s"], dato["breaches"], dato["outcomes"]) == (0, 0, 0)
    assert facts["latency"]["p99"] > 0
