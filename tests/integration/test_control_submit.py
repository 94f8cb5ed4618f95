"""``bulkops submit`` interrupted by SIGINT (CONTRACT "Control", issue 23): the requests it
published and that were not answered are cancelled, their replies waited for; the results
file has every answered id, the summary says what was withdrawn, what was done and how many
ids were never published; exit 130; nothing cancelled reaches the API."""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import orjson
import pytest

from tests.integration.cli import BULKOPS, cli_env
from tests.integration.harness import Rig, die_with_parent, ids

pytestmark = pytest.mark.integration

OP = "bloomreach.catalog_items.delete"


async def test_a_first_ctrl_c_withdraws_the_published_remainder_and_reports(
    r: Rig, tmp_path: Path
) -> None:
    wanted = ids("s", 2000)
    source = tmp_path / "ids.txt"
    source.write_text("\n".join(wanted) + "\n")
    out = tmp_path / "results.jsonl"
    r.emulator.config.bloomreach_rate = (2, 1.0)
    targets = dict(r.settings().targets)
    targets["shop"] = targets["shop"].model_copy(
        update={"rate_limit": "2/1s", "max_batch_items": 100}
    )
    async with r.worker(r.settings(targets=targets, linger_seconds=0.05)):
        process = await asyncio.create_subprocess_exec(
            str(BULKOPS), "submit", OP, "--target", "shop", "--catalog-id", "cat-1",
            "--ids-file", str(source), "--chunk", "50", "--results", str(out),
            env=cli_env(r), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        async with asyncio.timeout(30):
            while len(r.emulator.requests(api="bloomreach")) < 2:
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 60)
    stderr = err.decode()
    assert process.returncode == 130, stderr
    rows = [orjson.loads(line) for line in out.read_text().splitlines()]
    counts = collections.Counter(row["id"] for row in rows)
    assert counts and max(counts.values()) == 1  # each answered id once
    succeeded = {row["id"] for row in rows if row["status"] == "succeeded"}
    withdrawn = {row["id"] for row in rows if row["status"] == "rejected"}
    assert {row["error"]["code"] for row in rows if row["status"] == "rejected"} == {"cancelled"}
    assert withdrawn, stderr
    assert succeeded == set(r.emulator.bloomreach.deleted("cat-1"))
    sent = sum(e.items for e in r.emulator.requests(api="bloomreach"))
    assert sent == len(succeeded)  # nothing withdrawn was sent
    never = 2000 - len(rows)
    assert never > 0
    assert f"{len(succeeded)} ids were done (answered), {len(withdrawn)} withdrawn" in stderr
    assert f"{never} ids were never published" in stderr
    assert "waiting up to 30s for their replies" in stderr
