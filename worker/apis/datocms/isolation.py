"""Refusal isolation: a DatoCMS bulk request refused whole (404/422) because of some of its
items, for every operation (ids only, or with params: a stage one model's workflow lacks).

Bounded, and every extra request passes the target's limiter like any other:
1. one read-back of the batch: ids that do not exist fail ``not found`` and the rest is
   sent again as one request; a read-back answered 404 means the scope itself is gone
   (every id fails alike, no split);
2. every id exists: the first and the last id go alone through the single-record endpoint
   (their answers are their outcomes: applied, or the API's precise error), and the others
   are sent again as one request (fewer than ``ALONE_BELOW``: id by id). When both ends and
   then the others are refused with the bulk refusal's code, three more ids (at a quarter,
   half and three quarters of the others) go alone: refused alike too, the refusal is taken
   as one of the params (an unknown collection, a stage no workflow has) and the others fail
   with it; one of them accepted, the others are split (step 3);
3. a request refused again is split in halves, and halves again, each sent as a bulk
   request, at most ``ISOLATION_REQUESTS`` of them for the batch; a refused part of fewer
   than ``ALONE_BELOW`` ids goes id by id through the single-record endpoint (cheaper than
   a bulk request and its job polls). Parts left when that budget is spent fail with the
   refusal (``not isolated``).

So k refused ids of a batch of n cost about 2·k·log2(n/4k) bulk requests (each accepted one
followed by its job polls) and up to 4·k single-record calls, and never more than one
read-back, five probes, ``ISOLATION_REQUESTS`` bulk requests and 4 single-record calls per
part left at the bottom.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from worker.apis.adapters import ItemResult
from worker.apis.datocms.operations import Action
from worker.errors import ApiError, ErrorInfo
from worker.http import RetriesExhausted
from worker.limiter import Hold

ISOLATION_REQUESTS = 100  # bulk requests one refused batch may cost past its probes
ALONE_BELOW = 5  # a refused part this small goes id by id (cheaper than a job per half)


class Runner(Protocol):
    """What isolation needs of one batch's run (the adapter's ``_Run``)."""

    @property
    def action(self) -> Action: ...

    @property
    def results(self) -> dict[str, ItemResult]: ...

    def fail_all(self, ids: list[str], result: ItemResult) -> None: ...

    async def read_back(self, ids: list[str]) -> dict[str, str]: ...

    async def process(self, ids: list[str], hold: Hold | None = None) -> None: ...

    async def single(
        self, item_id: str, attempts: int, job_id: str | None, state: str | None
    ) -> None: ...


class Isolation:
    """One batch's isolation of refused items (see the module's steps)."""

    def __init__(self, run: Runner, budget: int = ISOLATION_REQUESTS) -> None:
        self.run = run
        self.budget = budget
        self.states: dict[str, str] | None = None  # the read-back (None: not read, or failed)
        self.read = False
        self.left: int | None = None  # bulk requests left, once splitting
        self.params_suspect = False  # both ends refused alike: the rest's refusal is final

    async def refused(self, ids: list[str], refusal: ApiError) -> None:
        """``ids`` were refused as one request with ``refusal``: give each its outcome."""
        if self.left is not None:
            await self._split(ids, refusal)
            return
        if not self.read:
            self.read = True
            if not await self._read(ids, refusal):
                return
        if self.states is not None:
            missing = [i for i in ids if i not in self.states]
            if missing:
                info = ErrorInfo(refusal.code, f"not found: {refusal.message}", False)
                self.run.fail_all(missing, ItemResult("failed", info, 1))
                rest = [i for i in ids if i in self.states]
                if rest:
                    await self.run.process(rest)
                return
        await self._probe(ids, refusal)

    async def _read(self, ids: list[str], refusal: ApiError) -> bool:
        """Read the batch back; False when that answered every id (the scope is gone)."""
        try:
            self.states = await self.run.read_back(ids)
        except RetriesExhausted as exc:
            if exc.error.status == 404:
                # A list endpoint answers 404 only when the scope itself is gone (a deleted
                # sandbox environment): no split would help, every id fails alike.
                info = ErrorInfo(refusal.code, f"{refusal.message}; read-back: {exc.error}", False)
                self.run.fail_all(ids, ItemResult("failed", info, 1))
                return False
        return True

    async def _probe(self, ids: list[str], refusal: ApiError) -> None:
        ends = list(dict.fromkeys([ids[0], ids[-1]]))
        await asyncio.gather(*(self._alone(i, refusal) for i in ends))
        rest = ids[1:-1]
        self.left = self.budget
        if len(rest) < ALONE_BELOW:
            await asyncio.gather(*(self._alone(i, refusal) for i in rest))
            return
        self.params_suspect = len(ends) == 2 and all(self._refused_like(i, refusal) for i in ends)
        self.left -= 1
        await self.run.process(rest)

    async def _split(self, ids: list[str], refusal: ApiError) -> None:
        if len(ids) < ALONE_BELOW:
            await asyncio.gather(*(self._alone(i, refusal) for i in ids))
            return
        assert self.left is not None
        if self.params_suspect:
            self.params_suspect = False
            ids = await self._probe_inner(ids, refusal)
            if not ids:
                return
        if self.left < 2:
            message = (
                f"{refusal.message} (not isolated: the batch's {self.budget} isolation "
                "requests are spent)"
            )
            self.run.fail_all(ids, ItemResult("failed", ErrorInfo(refusal.code, message), 1))
            return
        self.left -= 2
        half = len(ids) // 2
        await asyncio.gather(self.run.process(ids[:half]), self.run.process(ids[half:]))

    async def _probe_inner(self, ids: list[str], refusal: ApiError) -> list[str]:
        """Both ends and the others together were refused alike: three more ids (at a
        quarter, half and three quarters of the others) go alone. Refused alike too, the
        refusal is taken as one of the params and the others fail with it (nothing left to
        split); one of them accepted, the refusal is about some items: the others, less the
        probes, are split."""
        probes = list(dict.fromkeys(ids[len(ids) * k // 4] for k in (1, 2, 3)))
        await asyncio.gather(*(self._alone(i, refusal) for i in probes))
        rest = [i for i in ids if i not in probes]
        if all(self._refused_like(i, refusal) for i in probes):
            message = (
                f"{refusal.message} (the first and last ids alone, the others together and "
                f"{len(probes)} of them alone were refused alike: taken as a refusal of the "
                "request's params)"
            )
            self.run.fail_all(rest, ItemResult("failed", ErrorInfo(refusal.code, message), 1))
            return []
        return rest

    async def _alone(self, item_id: str, refusal: ApiError) -> None:
        """The single-record call for one id: its answer is the id's outcome. Without a
        read-back, an update that must carry the record's own state (tags) is not risked."""
        if self.states is None and self.run.action.single_body is not None:
            self.run.fail_all([item_id], ItemResult("failed", refusal.info(), 1))
            return
        state = None if self.states is None else self.states.get(item_id)
        await self.run.single(item_id, 1, None, state)

    def _refused_like(self, item_id: str, refusal: ApiError) -> bool:
        result = self.run.results[item_id]
        return result.error is not None and result.error.code == refusal.code
