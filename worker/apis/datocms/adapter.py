"""DatoCMS adapter: bulk request, job follow-up, and per-item attribution of failures.

The job result only counts failures. When some failed, the records are read back
(``GET /items?filter[ids]=...``): an item whose state is what the operation asked for
succeeded; for the others the single-record endpoint gives the precise error (or, if it now
succeeds, the item succeeded after all). When the bulk request is refused as a whole because
of some ids (404/422), ``isolation`` finds them (read-back, single-record probes, halves), so
the good ids still go through, for operations with params too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from worker.apis.adapters import (
    ItemResult,
    Sendable,
    Tuning,
    failure,
    retry_policy,
)
from worker.apis.base import BatchKey, Operation, Payload
from worker.apis.datocms.isolation import ISOLATION_REQUESTS, Isolation
from worker.apis.datocms.operations import ACTIONS, Action
from worker.apis.datocms.target import DatoCMSTarget
from worker.apis.datocms.wire import (
    JobResult,
    bulk_body,
    is_done,
    item_refusal,
    job_of,
    json_or_none,
    parse_error,
    parse_job_result,
    read_back_states,
)
from worker.errors import ApiError, ErrorCode, ErrorInfo
from worker.http import RetriesExhausted, RetryPolicy, ScopedClient
from worker.limiter import Hold

log = logging.getLogger("bulkops.datocms")


class JobTimeout(Exception):
    """A job had no result by the deadline and the follow bound: it may still apply."""

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


# Past the deadline a job is polled this many poll maxima apart (20 s by default).
FOLLOW_PACE = 4.0


@dataclass(frozen=True, slots=True)
class JobPolling:
    """How long to wait for a job's result, and how often to ask (growing by half each time).

    A job past ``deadline_seconds`` may still apply: it is followed ``follow_seconds`` more,
    polled ``FOLLOW_PACE`` poll maxima apart, before its items are given up (``job_timeout``).
    """

    deadline_seconds: float
    initial_seconds: float
    max_seconds: float
    follow_seconds: float = 0.0

    @property
    def follow_interval(self) -> float:
        return self.max_seconds * FOLLOW_PACE


def make_adapter(target: DatoCMSTarget, tuning: Tuning) -> DatoCMS:
    jobs = JobPolling(
        deadline_seconds=tuning.job_deadline_seconds,
        initial_seconds=tuning.job_poll_initial_seconds,
        max_seconds=tuning.job_poll_max_seconds,
        follow_seconds=tuning.job_follow_seconds,
    )
    return DatoCMS(target, retry_policy(tuning), jobs)


class DatoCMS:
    """Adapter for the DatoCMS bulk operations of one target."""

    isolation_requests = ISOLATION_REQUESTS  # per refused batch (see ``isolation``)

    def __init__(self, target: DatoCMSTarget, retry: RetryPolicy, jobs: JobPolling) -> None:
        self.target = target
        self.retry = retry
        self.jobs = jobs

    def cost(self, operation: Operation, item_id: str, payload: Payload | None) -> int:
        return len(item_id) + 30

    def headers(self, environment: str | None, body: bool = False) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.target.api_token.get_secret_value()}",
            "Accept": "application/json",
            "X-Api-Version": "3",
        }
        if body:
            headers["Content-Type"] = "application/vnd.api+json"
        if environment:
            headers["X-Environment"] = environment
        return headers

    async def execute(
        self, key: BatchKey, items: Sequence[Sendable], client: ScopedClient, hold: Hold | None
    ) -> dict[str, ItemResult]:
        ids = [item.id for item in items]
        results: dict[str, ItemResult] = {}
        run = _Run(self, ACTIONS[key.operation], key, client, results)
        await run.process(ids, hold)
        missing = [i for i in ids if i not in results]
        assert not missing, f"no result for {len(missing)} ids"
        return results


class _Run:
    """One batch's way through the API: submit, follow, attribute, split when refused."""

    def __init__(
        self,
        adapter: DatoCMS,
        action: Action,
        key: BatchKey,
        client: ScopedClient,
        results: dict[str, ItemResult],
    ) -> None:
        self.a = adapter
        self.action = action
        self.key = key
        self.environment = key.scope
        self.params: dict[str, Any] = orjson.loads(key.params) if key.params else {}
        self.client = client
        self.results = results
        self.metrics = client.metrics
        self.isolation = Isolation(self, adapter.isolation_requests)

    def _on_retry(self, error: ApiError) -> None:
        self.client.count_retry(self.key.operation, error)

    def fail_all(self, ids: list[str], result: ItemResult) -> None:
        for item_id in ids:
            self.results[item_id] = result

    async def _send(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        hold: Hold | None = None,
    ) -> httpx.Response:
        """One request to this target and environment; errors read as DatoCMS writes them."""
        return await self.client.send(
            endpoint,
            method,
            self.a.target.base_url + path,
            headers=self.a.headers(self.environment, body=content is not None),
            content=content,
            params=params,
            hold=hold,
            errors=parse_error,
        )

    async def process(self, ids: list[str], hold: Hold | None = None) -> None:
        """Submit ``ids`` as one job and follow it, retried within the budget. A refusal of
        the whole request because of some ids is worked around (``Isolation``)."""
        attempts = 0

        async def call() -> None:
            nonlocal attempts, hold
            attempts += 1
            first, hold = hold, None  # the held slot is for the first send only
            job_id = await self._submit(ids, first)
            await self._follow(ids, job_id, attempts)

        try:
            await self.a.retry.run(call, self._on_retry)
        except JobTimeout as exc:
            info = ErrorInfo(ErrorCode.JOB_TIMEOUT, str(exc), True)
            self.fail_all(ids, ItemResult("failed", info, attempts, exc.job_id))
        except RetriesExhausted as exc:
            refusal = exc.error
            if item_refusal(refusal):
                await self.isolation.refused(ids, refusal)
            else:
                self.fail_all(ids, failure(exc))

    async def _submit(self, ids: list[str], hold: Hold | None) -> str:
        body = bulk_body(self.action, ids, self.params)
        response = await self._send(
            self.action.endpoint, "POST", self.action.bulk_path, content=body, hold=hold
        )
        try:
            return str(orjson.loads(response.content)["data"]["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ApiError(ErrorCode.UNEXPECTED_RESPONSE, "no job id in the answer", True) from exc

    async def _follow(self, ids: list[str], job_id: str, attempts: int) -> None:
        started = time.monotonic()
        job = await self._poll(job_id)
        self.metrics.job_duration.labels(*self.key.labels).observe(time.monotonic() - started)
        if job.error is not None:
            raise job.error
        if job.failed == 0:
            self.fail_all(ids, ItemResult("succeeded", None, attempts, job_id))
            return
        await self._attribute(ids, job, job_id, attempts)

    async def _poll(self, job_id: str) -> JobResult:
        """The job's result. Past the deadline the job is followed more slowly (every poll
        counts against the limit) up to the follow bound: until then its fate is unknown and
        nothing behind its ids may go (``JobTimeout`` at the bound)."""
        s = self.a.jobs
        deadline = time.monotonic() + s.deadline_seconds
        give_up = deadline + s.follow_seconds
        interval = s.initial_seconds
        path = f"/job-results/{quote(job_id, safe='')}"
        while True:
            now = time.monotonic()
            until = deadline if now < deadline else give_up
            await asyncio.sleep(min(interval, max(0.0, until - now)))
            try:
                response = await self._send("job_result", "GET", path)
                return parse_job_result(orjson.loads(response.content))
            except ApiError as exc:
                if exc.status != 404 and not exc.retryable:
                    raise
            except (KeyError, TypeError, ValueError) as exc:
                message = f"job result: {exc!r}"
                raise ApiError(ErrorCode.UNEXPECTED_RESPONSE, message, True) from exc
            now = time.monotonic()
            if now >= give_up:
                self.metrics.job_timeouts.labels(*self.key.labels).inc()
                raise JobTimeout(
                    f"job {job_id} had no result after {s.deadline_seconds:g}s and "
                    f"{s.follow_seconds:g}s more of following it; it may still apply",
                    job_id,
                )
            if now >= deadline:
                if interval < s.follow_interval:
                    log.warning("job %s is past its deadline: following it slower", job_id)
                interval = s.follow_interval
            else:
                interval = min(interval * 1.5, s.max_seconds)

    async def _settled(self, response: httpx.Response) -> Any:
        """The answer's body, or, when the answer is a job, its result's payload: the job's
        own status decides (a non-2xx one raises its error). Its polls count as any request."""
        job_id = job_of(response)
        if job_id is None:
            return json_or_none(response)
        job = await self._poll(job_id)  # JobTimeout: the caller decides
        if job.error is not None:
            raise job.error
        return job.payload

    async def read_back(self, ids: list[str]) -> dict[str, str]:
        """Current state of ``ids`` (absent ones missing), retried within the budget."""
        path = "/items" if self.action.resource == "item" else "/uploads"
        params = {"filter[ids]": ",".join(ids), "page[limit]": str(max(1, len(ids)))}
        if self.action.resource == "item":
            params["version"] = "current"

        async def call() -> dict[str, str]:
            response = await self._send(f"{self.action.resource}s_read", "GET", path, params=params)
            try:
                return read_back_states(await self._settled(response), self.action.state_of)
            except JobTimeout as exc:
                raise ApiError(ErrorCode.JOB_TIMEOUT, str(exc), True) from exc

        states, _ = await self.a.retry.run(call, self._on_retry)
        return states

    async def _attribute(self, ids: list[str], job: JobResult, job_id: str, attempts: int) -> None:
        try:
            states = await self.read_back(ids)
        except RetriesExhausted as exc:
            message = (
                f"job {job_id} reported {job.failed} of {len(ids)} failed and reading the "
                f"items back failed: {exc.error}"
            )
            info = ErrorInfo(ErrorCode.RETRIES_EXHAUSTED, message, True)
            self.fail_all(ids, ItemResult("failed", info, attempts, job_id))
            return
        suspects = [i for i in ids if not is_done(self.action, states.get(i), self.params)]
        for item_id in ids:
            self.results[item_id] = ItemResult("succeeded", None, attempts, job_id)
        if len(suspects) != job.failed:
            log.warning(
                "job %s counted %d failed, read-back shows %d not applied",
                job_id,
                job.failed,
                len(suspects),
            )
        await asyncio.gather(*(self.single(i, attempts, job_id, states.get(i)) for i in suspects))

    async def single(
        self, item_id: str, attempts: int, job_id: str | None, state: str | None
    ) -> None:
        """Ask the single-record endpoint: its answer is this item's true outcome."""
        path = self.action.single_path.format(id=quote(item_id, safe=""))
        make_body = self.action.single_body
        content = (
            None if make_body is None else orjson.dumps(make_body(item_id, self.params, state))
        )

        async def call() -> None:
            endpoint = self.action.endpoint.replace("bulk_", "single_")
            response = await self._send(endpoint, self.action.single_method, path, content=content)
            # DELETE /items/<id> answers 202 + a job: success is the job's, not the 202's.
            await self._settled(response)

        try:
            _, extra = await self.a.retry.run(call, self._on_retry)
        except JobTimeout as exc:
            info = ErrorInfo(ErrorCode.JOB_TIMEOUT, str(exc), True)  # the job may still complete
            self.results[item_id] = ItemResult("failed", info, attempts + 1, job_id)
            return
        except RetriesExhausted as exc:
            result = failure(exc, job_id)
            self.results[item_id] = ItemResult(
                "failed", result.error, attempts + exc.attempts, job_id
            )
            return
        self.results[item_id] = ItemResult("succeeded", None, attempts + extra, job_id)
