"""Issue 23: a pause longer than the consumer timeout, on a node of the test's own (node 1
of scripts/cluster.sh, its ``consumer_timeout`` set to 5 s and restored after). RabbitMQ
3.10 checks the timeout on each channel's tick, once a minute (measured: a 5 s timeout
closed an unacked consumer's channel after 60 s), so the pause lasts 75 s. DatoCMS
environment env-2 is paused before the worker starts, env-1 runs: env-1 completes, env-2
sends nothing for the whole pause (its messages sit in the hold queue, nothing unacked in the
worker, so no channel is closed by the timeout); the worker is killed (-9) and started
again during the pause, which holds; after resume everything completes in per-id order (a
publish then an unpublish of an id ends draft), nothing lost, no duplicate (the ledger)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from tests.cluster.support import cluster_rig, ctl, url, urls
from tests.faults.ledger import Ledger
from tests.faults.support import FAST, worker
from tests.integration.harness import start_worker
from worker.client.control import ControlClient
from worker.emulator import Emulator

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.timeout(240)]
PUBLISH, UNPUBLISH = "datocms.items.publish", "datocms.items.unpublish"
PAUSE_SECONDS = 75.0  # past the first consumer-timeout check (one a minute) after 5 s


async def test_a_pause_outlasts_the_consumer_timeout(emulator: Emulator) -> None:
    emulator.config.datocms_job_seconds = 0.1
    old = ctl("eval", "application:get_env(rabbit, consumer_timeout).").strip()
    ctl("eval", "application:set_env(rabbit, consumer_timeout, 5000).")  # node 1: the first up
    try:
        async with cluster_rig(emulator, declare_on=1, client_on=1) as r:
            ledger = Ledger("cluster control: pause past the consumer timeout", r.results)
            flipped = []
            for n in range(20):
                env = f"env-{1 + n % 2}"
                ids = [f"t{n}-a", f"t{n}-b"]
                await r.publish(ledger.expect(f"p{n}", PUBLISH, ids, target="main",
                                              environment=env))  # fmt: skip
                if n % 4 < 2:
                    await r.publish(ledger.expect(f"u{n}", UNPUBLISH, ids[:1], target="main",
                                                  environment=env))  # fmt: skip
                    flipped.append((env, ids[0]))
            env_vars = r.env(**FAST, amqp_url=urls(1))
            hold = f"{r.request_queue}.held.main.environment.env-2"
            async with ControlClient.connect(
                url(1), exchange=env_vars["BULKOPS_CONTROL_EXCHANGE"]
            ) as control:
                await control.pause("main", environment="env-2", reason="consumer timeout test")
                began = time.monotonic()
                first = await start_worker(env_vars)
                await r.results.wait_for(25, timeout=60)  # env-1: 10 publish of 2, 5 unpublish
                await asyncio.sleep(2)  # env-1's acks reach the broker: no duplicate from the kill
                first.kill()  # -9, during the pause
                await first.process.wait()
                async with worker(env_vars) as second:
                    await asyncio.sleep(max(0.0, PAUSE_SECONDS - (time.monotonic() - began)))
                    dato = emulator.requests(api="datocms")
                    assert [e for e in dato if e.environment == "env-2"] == []
                    answered = {
                        o["id"] for o in map(orjson.loads, (m.body for m in r.results.messages))
                    }
                    assert not {i for i in answered if int(i[1:].split("-")[0]) % 2}  # env-2
                    depth = await r.channel.declare_queue(hold, passive=True)
                    assert depth.declaration_result.message_count == 15
                    await control.resume("main", environment="env-2")
                    await ledger.settle(timeout=60)
                log = "\n".join(first.stderr + second.stderr)
                assert "PRECONDITION_FAILED" not in log and "consumer_timeout" not in log
                assert "connection or channel closed" not in log, log[-2000:]
            row = ledger.check()  # nothing lost, no duplicate (no fault allowed any)
            assert row.duplicated == 0
            assert emulator.breaches() == []
            for env, item in flipped:
                assert emulator.datocms.record_status(item, env) == "draft", item
    finally:
        value = old.removeprefix("{ok,").removesuffix("}")
        if value.isdigit():
            ctl("eval", f"application:set_env(rabbit, consumer_timeout, {value}).")
        else:
            ctl("eval", "application:unset_env(rabbit, consumer_timeout).")
