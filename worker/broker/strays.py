"""Partitioned mode: hold queues of resumed scopes that nobody drains (``worker.broker.hold``,
"Partitioned mode"; issue 23, finding 5).

A replica knows it owns a partition only once the partition queue delivered to it (AMQP
0-9-1 does not tell a single-active consumer that it became active), and its owner drains
the partition's hold queues of resumed scopes only then (``Holds.adopt``) or at a resume of
a partition it knows (``Holds.resume``). No delivery comes when a pause moved everything of
a scope into its hold queue and the sessions were renewed (a reconnect, a restart), nor when
the replica draining a hold queue died with nothing else of the partition queued. So at a
resume, and in every replica's sweep (``Owner.sweep``), ``Strays.beckon`` looks for hold
queues of resumed keys no pause covers that hold messages and have no consumer: of a
partition this replica knows it owns, it drains them (as ``Holds.recheck`` does); of
another, it leaves a marker in the partition queue (``Router.mark``, the priority lane's),
whose receiver takes the partition and drains them before anything else of it runs; an
owner that knew it already acks the marker (its own sweep drains them).

Cheap: only the keys the control state saw resumed and no pause covers, passive declares on
one probing channel (a failed one closes it: a new one next time), a hold queue found
missing probed again by a sweep only after ``ABSENT_SECONDS``; at most one marker per
partition per sweep, none while the hold queue has a consumer, none while the partition
queue holds messages (a delivery is due anyway).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from worker.broker.drains import hold_name
from worker.broker.partition_topology import queue_name
from worker.control.state import PauseKey

log = logging.getLogger("bulkops.partitions")

ABSENT_SECONDS = 30.0  # a hold queue found missing is not probed again by a sweep before
Stray = tuple[PauseKey, int]  # a hold queue of a partition: its pause key, the partition


class Strays:
    """One session's search for hold queues nobody drains, and what it does about them."""

    def __init__(
        self,
        connection: AbstractConnection,
        intake: Any,
        held: Any,
        mark: Callable[[int], Awaitable[None]],
        lost: asyncio.Event,
    ) -> None:
        """``intake``: the session (its ``holds``, ``control`` and ``settings``); ``held``:
        the ``Owner``'s partitions (``owned``, ``holding``); ``mark``: leaves a marker in a
        partition queue."""
        self.connection = connection
        self.intake = intake
        self.settings = intake.settings
        self.held = held
        self.mark = mark
        self.lost = lost
        self.absent: dict[Stray, float] = {}  # hold queues found missing: probed again then
        self._probing: AbstractChannel | None = None
        self._lock = asyncio.Lock()  # one probe at a time on the probing channel

    async def beckon(
        self, keys: Collection[PauseKey] | None = None, marked: Collection[int] = ()
    ) -> None:
        """Drain, or leave a marker for, the hold queues of ``keys`` (default: every
        resumed key; a pause covering one leaves it out) that hold messages and have no
        consumer (``marked``: partitions given a marker already in this sweep). A failure
        (the connection is going) is logged: the next sweep looks again."""
        holds = getattr(self.intake, "holds", None)
        if holds is None or self.lost.is_set():
            return
        try:
            partitions = [i for i in range(self.settings.partitions)
                          if i not in self.held.holding and i not in holds.adopting]  # fmt: skip
            found = await self.find(partitions, keys)
            for index in sorted({partition for _, partition in found}):
                slots = [slot for slot in found if slot[1] == index]
                await self._beckon(holds, index, slots, index in marked)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self.lost.is_set():
                log.warning("looking for held messages nobody drains failed (%s: %s)",
                            type(exc).__name__, str(exc)[:300])  # fmt: skip

    async def _beckon(self, holds: Any, index: int, slots: list[Stray], marked: bool) -> None:
        """Partition ``index``'s hold queues ``slots`` (inner ones first) hold messages
        nobody drains: drain them if the partition is ours, else leave a marker."""
        if index in self.held.holding or index in holds.adopting:
            return  # being handed on, or being taken (drained then): the next sweep looks
        if index in self.held.owned:
            for slot in slots:
                log.warning("hold queue %s holds messages nobody drains: draining it",
                            hold_name(self.settings, *slot))  # fmt: skip
                await holds._drain(slot)
        elif not marked and not await self._queued(index):
            log.info("partition %d: held messages of a resumed scope, not drained: a marker "
                     "for its owner", index)  # fmt: skip
            await self.mark(index)

    async def find(
        self, partitions: Iterable[int], keys: Collection[PauseKey] | None = None
    ) -> list[Stray]:
        """The hold queues of ``partitions`` and of ``keys`` (default: every key the control
        state saw resumed) that no pause covers, holding messages without a consumer, inner
        keys first (the order their drains must start in). Without ``keys`` (a sweep), one
        found missing is not probed again for ``ABSENT_SECONDS``."""
        state = getattr(self.intake, "control", None)
        if state is None:
            return []
        fresh = keys is not None
        chosen = state.resumed if keys is None else keys
        ordered = sorted(chosen, key=lambda k: (k[1] is None, str(k)))  # scopes first
        found: list[Stray] = []
        for partition in partitions:
            for key in ordered:
                slot = (key, partition)
                if state.paused(*key) is not None:
                    continue
                if not fresh and self.absent.get(slot, 0.0) > time.monotonic():
                    continue
                probed = await self._probe(hold_name(self.settings, key, partition))
                if probed is None:
                    self.absent[slot] = time.monotonic() + ABSENT_SECONDS
                    continue
                self.absent.pop(slot, None)
                messages, consumers = probed
                if messages and not consumers:
                    found.append(slot)
        return found

    async def _queued(self, index: int) -> bool:
        """Whether partition ``index``'s queue holds messages ready (unknown: yes)."""
        probed = await self._probe(queue_name(self.settings, index))
        return probed is None or probed[0] > 0

    async def _probe(self, name: str) -> tuple[int, int] | None:
        """A queue's ready messages and consumers; None when it does not exist; (0, 1) when
        unknown (the connection is going: nothing to do about it)."""
        async with self._lock:
            try:
                if self._probing is None or self._probing.is_closed:
                    self._probing = await self.connection.channel()
                ok = await self._probing.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None
            except Exception:
                return 0, 1
        result = ok.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
