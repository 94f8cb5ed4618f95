"""The out side of the hold queues (``worker.broker.hold``, whose docstring has the rules):
their names, and draining them on resume."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from worker.broker.acker import Acker
from worker.control.state import PauseKey
from worker.settings import Settings

log = logging.getLogger("bulkops.control")

LANE_HEADER = "x-bulkops-lane"
DRAIN_CHECK_SECONDS = 1.0
IDLE_CHECK_SECONDS = 5.0


Slot = tuple[PauseKey, int | None]  # a pause key and a partition (None: not partitioned)


def hold_name(settings: Settings, key: PauseKey, partition: int | None = None) -> str:
    """``<request queue>.held.<target>[.<field>.<value>][.p<partition>]`` (the primary:
    ``@primary``), percent-encoded with ``+`` for ``%`` (AMQP clients refuse ``%`` and ``~``
    in queue names); past 255 bytes, cut with a hash of the whole."""
    target, scope = key
    parts = [settings.request_queue, "held", _encoded(target)]
    if scope is not None:
        parts += [scope[0], "@primary" if scope[1] is None else _encoded(scope[1])]
    if partition is not None:
        parts.append(f"p{partition}")
    name = ".".join(parts)
    if len(name.encode()) > 255:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = name.encode()[:230].decode(errors="ignore") + "." + digest
    return name


def _encoded(value: str) -> str:
    """Only letters, digits, ``_``, ``-`` and ``.`` stay; ``+XX`` for the rest."""
    return quote(value, safe="").replace("~", "%7E").replace("%", "+")


def hold_arguments(settings: Settings) -> dict[str, Any]:
    """Quorum, durable, dead-lettering to the DLQ like the request queues, no delivery limit
    (RabbitMQ 3.x: none; it is consumed only on resume)."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": settings.dead_letter_queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


@dataclass(eq=False)
class _Drain:
    slot: Slot
    channel: AbstractChannel
    queue: AbstractQueue
    acker: Acker
    tag: str = ""
    # Paused again (``Holds.pause``): a delivery that comes meanwhile is left unacked for
    # the channel's close to put back, or, if the drain ``keeping`` what it took, taken in
    # to wait with it in the worker.
    stopped: bool = False
    keeping: bool = False


class _Drains:
    """Draining hold queues (the out side of ``Holds``)."""

    session: Any
    settings: Settings
    connection: AbstractConnection
    owned: Callable[[], Collection[int]] | None
    adopting: set[int]
    starting: set[Slot]  # drains being set up: filling already (``Holds.key_for``)
    draining: dict[Slot, _Drain]
    stopped: list[_Drain]
    released: list[_Drain]  # stopped at a partition's hand-over, their channels still open
    moving: dict[Slot, int]
    idle: set[Slot]
    handed: set[int]  # partitions handed on: nothing more is moved of them
    _declaring: AbstractChannel | None
    # Partitioned: the hold queues of resumed keys nobody drains (``worker.broker.strays``).
    beckon: Callable[[Collection[PauseKey]], Awaitable[None]] | None

    if TYPE_CHECKING:  # ``Holds``' (``worker.broker.moving``)

        async def _settled(self, partition: int | None, timeout: float) -> None: ...

    # -- out --------------------------------------------------------------------------------

    async def resume(self, key: PauseKey) -> None:
        """Consume the hold queue(s) the resume of ``key`` frees, if any, through the usual
        intake (partitioned: those of the partitions owned)."""
        partitions: Collection[int | None] = [None] if self.owned is None else self.owned()
        slots = [(free, partition) for free in self.freed(key)
                 for partition in sorted(partitions, key=str)]  # fmt: skip
        slots = [s for s in slots if s not in self.draining and s not in self.starting]
        # Before any await: until its drain runs, what comes from a queue further out goes
        # to the tail of each hold queue the resume frees (``Holds.key_for``), not ahead.
        self.starting.update(slots)
        for slot in slots:
            await self._start(slot)
        if self.beckon is not None:  # partitioned: those of partitions nobody knows it owns
            await self.beckon(self.freed(key))

    def freed(self, key: PauseKey) -> list[PauseKey]:
        """The hold queues to drain once ``key`` is resumed, inner ones first: ``key``'s own,
        unless a pause still covers it (a scope's hold queue waits for its target's resume
        too), and, for a whole target, those of its scopes resumed earlier that no pause
        covers now (before the target's: its drain passes their messages on to them)."""
        state = self.session.control
        if state is None:
            return [key]
        keys = [key]
        if key[1] is None:
            scopes = [k for k in state.resumed if k[0] == key[0] and k[1] is not None]
            keys = sorted(scopes, key=str) + keys
        return [k for k in keys if state.paused(*k) is None]

    async def adopt(self, partition: int) -> None:
        """A partition just taken: drain its hold queues of the resumed scopes first (until
        their drains start, messages of those scopes go to the hold queues' tails)."""
        state = self.session.control
        self.handed.discard(partition)  # ours again: its moves are made
        if state is None or not state.resumed:
            return
        self.adopting.add(partition)  # before any await: the partition's next deliveries
        try:
            scopes = sorted((k for k in state.resumed if k[1] is not None), key=str)
            wide = sorted((k for k in state.resumed if k[1] is None), key=str)
            for key in scopes + wide:  # inner ones first
                if state.paused(*key) is None:
                    await self._drain((key, partition))
        finally:
            self.adopting.discard(partition)

    async def release(self, partition: int) -> None:
        """A partition handed on: stop draining its hold queues (``let_go`` gives back what
        was taken from them and not started, once the started work is settled)."""
        for slot in [s for s in self.draining if s[1] == partition]:
            drain = self.draining.pop(slot)
            self.released.append(drain)
            with contextlib.suppress(Exception):
                await drain.queue.cancel(drain.tag)
        self.idle = {s for s in self.idle if s[1] != partition}

    async def let_go(self, partition: int) -> None:
        """The partition's started work is settled (or given up): close the channels of the
        drains ``release`` stopped, their acks written first: the broker puts what they took
        and did not finish back at their hold queues' heads, in delivery order (the hand-over
        forgot it; unacked, it waited for the consumer timeout and came back after later
        work). Moves of the partition's requests not made by now (the hand-over waited, up
        to its deadline) are not made: they go back with the partition's channel, in order."""
        self.handed.add(partition)
        await self._settled(partition, 5.0)
        drains = [d for d in self.released if d.slot[1] == partition]
        self.released = [d for d in self.released if d.slot[1] != partition]
        for drain in drains:
            await self.session.ackers.flush(drain.acker, timeout=5.0)
            with contextlib.suppress(Exception):
                await drain.channel.close()
            self.session.ackers.stop(drain.acker)

    async def _drain(self, slot: Slot) -> None:
        """Drain the hold queue of ``slot`` unless that is done or starting already."""
        if slot in self.draining or slot in self.starting:
            return
        self.starting.add(slot)  # before any await: filling (``key_for``), started once
        await self._start(slot)

    async def _start(self, slot: Slot) -> None:
        """Start a drain marked ``starting`` (cleared once it runs, or when it does not)."""
        try:
            await self._consume(slot)
        finally:
            self.starting.discard(slot)

    async def _consume(self, slot: Slot) -> None:
        key, partition = slot
        name = hold_name(self.settings, key, partition)
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return  # nothing was held (the failed declaration closed that channel)
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        underlay = await channel.get_underlay_channel()
        state = self.session.control
        if state is not None and state.paused(*key) is not None:  # paused again meanwhile
            self.idle.add(slot)
            with contextlib.suppress(Exception):
                await channel.close()
            return
        acker = self.session.ackers.start(underlay)
        drain = _Drain(slot, channel, queue, acker)

        async def take(message: AbstractIncomingMessage) -> None:
            if drain.stopped and not drain.keeping:
                return  # the channel's close puts it back at the head
            acker.delivered(message.delivery_tag)
            priority = (message.headers or {}).get(LANE_HEADER) in ("priority", b"priority")
            await self.session.handle(message, acker, partition, priority, held=key,
                                      stay=drain.stopped)  # fmt: skip

        self.draining[slot] = drain  # before the first delivery can come
        try:
            drain.tag = await queue.consume(take)
        except BaseException:
            self.draining.pop(slot, None)
            raise
        log.info("resume: draining %s", name)

    async def stop(self) -> None:
        """No more deliveries from hold queues (shutting down)."""
        for drain in self.draining.values():
            with contextlib.suppress(Exception):
                await drain.queue.cancel(drain.tag)

    async def close(self) -> None:
        """Shutting down, after the drain (``worker.broker.run``): close the channel of
        every drain, running or stopped by a pause, once its acks are written: the broker
        puts what it took and did not finish (given back, not nacked) back at its hold
        queue's head, in delivery order."""
        drains = [*self.draining.values(), *self.stopped, *self.released]
        self.draining.clear()
        self.stopped.clear()
        self.released.clear()
        for drain in drains:
            await self.session.ackers.flush(drain.acker, timeout=5.0)
            with contextlib.suppress(Exception):
                await drain.channel.close()

    async def watch(self) -> None:
        """Finish the drains whose hold queue is empty and whose messages are answered; every
        ``IDLE_CHECK_SECONDS``, drain again a drained hold queue that got messages (a late
        move by a replica that had not read the resume yet)."""
        rounds = 0
        while True:
            await asyncio.sleep(DRAIN_CHECK_SECONDS)
            await self._close_stopped()
            for slot, drain in list(self.draining.items()):
                if not drain.tag or self.moving.get(slot, 0) or drain.acker.outstanding:
                    continue
                ok = await drain.channel.declare_queue(drain.queue.name, passive=True)
                result = ok.declaration_result
                if result.message_count or (result.consumer_count or 0) > 1:
                    continue  # messages left, or another replica drains it too
                await self._finish(slot, drain)
            rounds += 1
            if rounds * DRAIN_CHECK_SECONDS >= IDLE_CHECK_SECONDS:
                rounds = 0
                await self.recheck()

    async def _close_stopped(self) -> None:
        """Close the channels of drains stopped by a pause once what they took and kept (some
        of its ids sent) is settled."""
        for drain in list(self.stopped):
            if drain.acker.outstanding:
                continue
            self.stopped.remove(drain)
            await self.session.ackers.flush(drain.acker, timeout=5.0)
            with contextlib.suppress(Exception):
                await drain.channel.close()
            self.session.ackers.stop(drain.acker)

    async def recheck(self) -> None:
        """Drain again each drained hold queue holding messages while its scope is not
        paused; forget one that is gone (deleted by hand)."""
        state = self.session.control
        owned = None if self.owned is None else self.owned()
        for slot in sorted(self.idle - set(self.draining), key=str):
            key, partition = slot
            if state is not None and state.paused(*key) is not None:
                continue  # paused (again): it is drained on the next resume
            if owned is not None and partition not in owned:
                self.idle.discard(slot)  # its owner watches it
                continue
            if self.moving.get(slot):
                continue  # moves into it under way (its queue may not exist yet): later
            name = hold_name(self.settings, key, partition)
            count = await self._depth(name)
            if count is None:
                self.idle.discard(slot)
            elif count:
                log.warning("hold queue %s holds %d messages: draining it", name, count)
                self.idle.discard(slot)
                await self._drain(slot)

    async def _depth(self, name: str) -> int | None:
        """Messages ready in a queue; None when it does not exist (the failed passive
        declaration closes the probing channel: a new one next time)."""
        if self._declaring is None or self._declaring.is_closed:
            self._declaring = await self.connection.channel()
        try:
            ok = await self._declaring.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        return int(ok.declaration_result.message_count or 0)

    async def _finish(self, slot: Slot, drain: _Drain) -> None:
        """Stop draining: nothing ready, nothing of ours unanswered, no other consumer, and
        nothing being moved in by this worker (``draining`` no longer names the key, so
        nothing new starts). The queue stays (see the module's docstring): a late move
        into it is found by ``recheck``."""
        del self.draining[slot]  # from here on, new messages of the scope run as usual
        with contextlib.suppress(Exception):
            await drain.queue.cancel(drain.tag)
        if self.moving.get(slot, 0):
            await self._drain(slot)  # a move started meanwhile: drain on
            return
        with contextlib.suppress(Exception):
            await drain.channel.close()
        self.idle.add(slot)
        log.info("resume: %s drained (left in place, watched)", drain.queue.name)
