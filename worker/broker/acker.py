"""Settling deliveries: one Acker per consuming channel, and the session's set of them."""

from __future__ import annotations

import asyncio
import collections
import contextlib

import aiormq
from aio_pika.abc import AbstractIncomingMessage


class Acker:
    """Settles the deliveries of one channel, in order, from one task, acking a run of them in
    one frame where that is safe.

    ``basic.ack`` with ``multiple`` settles every outstanding delivery up to a tag. It is sent
    only for a run of settled deliveries at the head of the channel's unsettled ones: every
    delivery is registered when its callback starts (aio-pika starts them in delivery
    order), so all tags below the run's last are registered, and all of them are settled.
    Deliveries held back (partition hand-over) or given back stay unsettled and cut runs
    short; the acks behind them go one by one. One task sends every ack and nack of the
    channel, so no frame overtakes another: a multiple ack never reaches the broker before
    a nack it covers. Frames are written without waiting for each to drain.
    """

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self._unsettled: collections.deque[int] = collections.deque()
        self._settled: set[int] = set()  # sent, still behind an unsettled one
        self._requests: asyncio.Queue[tuple[int, bool | None]] = asyncio.Queue()

    @property
    def outstanding(self) -> int:
        """Deliveries not yet acked or nacked (nor asked to be)."""
        return len(self._unsettled) - len(self._settled) - self._requests.qsize()

    def delivered(self, tag: int) -> None:
        self._unsettled.append(tag)

    def ack(self, tag: int) -> None:
        self._requests.put_nowait((tag, None))

    def nack(self, tag: int, requeue: bool) -> None:
        self._requests.put_nowait((tag, requeue))

    async def flush(self) -> None:
        """Return once every ack and nack asked for so far is written."""
        await self._requests.join()

    async def run(self) -> None:
        while True:
            batch = [await self._requests.get()]
            while not self._requests.empty():
                batch.append(self._requests.get_nowait())
            try:
                await self._send(batch)
            except aiormq.exceptions.ChannelInvalidStateError:
                pass  # closed: the broker puts these deliveries back for the next consumer
            finally:
                for _ in batch:
                    self._requests.task_done()

    async def _send(self, batch: list[tuple[int, bool | None]]) -> None:
        channel = self.channel
        acks: set[int] = set()
        for tag, requeue in batch:
            if requeue is None:
                acks.add(tag)
            else:
                await channel.basic_nack(tag, requeue=requeue, wait=False)
                self._settled.add(tag)
        upto = None
        unsettled, settled = self._unsettled, self._settled
        while unsettled and (unsettled[0] in acks or unsettled[0] in settled):
            tag = unsettled.popleft()
            if tag in acks:
                acks.discard(tag)
                upto = tag
            else:
                settled.discard(tag)
        if upto is not None:
            await channel.basic_ack(upto, multiple=True, wait=False)
        for tag in sorted(acks):
            await channel.basic_ack(tag, wait=False)
            settled.add(tag)


class AmqpDelivery:
    """Ack/nack for one consumed message, exactly once, through its channel's Acker."""

    __slots__ = ("_acker", "_done", "message")

    def __init__(self, message: AbstractIncomingMessage, acker: Acker) -> None:
        self.message = message
        self._acker = acker
        self._done = False

    @property
    def acker(self) -> Acker:
        """The Acker of the channel it came from."""
        return self._acker

    async def ack(self) -> None:
        if not self._done:
            self._done = True
            self._acker.ack(self.message.delivery_tag)  # type: ignore[arg-type]

    async def nack(self, requeue: bool) -> None:
        if not self._done:
            self._done = True
            self._acker.nack(self.message.delivery_tag, requeue)  # type: ignore[arg-type]


def delivery_of(message: AbstractIncomingMessage, acker: Acker) -> AmqpDelivery:
    """The delivery to settle ``message`` with: a bundle's part has its own
    (``worker.broker.bundles``), any other message a new ``AmqpDelivery``."""
    part = getattr(message, "part", None)
    return part if isinstance(part, AmqpDelivery) else AmqpDelivery(message, acker)


class Ackers:
    """The Ackers of one session's consuming channels, each running as a task of the session."""

    def __init__(self, tasks: asyncio.TaskGroup) -> None:
        self._tasks = tasks
        self._running: dict[Acker, asyncio.Task[None]] = {}

    def start(self, channel: aiormq.abc.AbstractChannel) -> Acker:
        """The Acker of a consuming channel, its task running in the session."""
        acker = Acker(channel)
        self._running[acker] = self._tasks.create_task(acker.run())
        return acker

    async def flush(self, acker: Acker | None, timeout: float) -> None:
        """Wait, at most ``timeout``, until what was acked so far (on one channel, or all) is
        queued for the socket. Closing the channel after it (its CloseOk comes after
        every frame before it) is what makes sure it went out."""
        ackers = [acker] if acker is not None else list(self._running)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await asyncio.gather(*(a.flush() for a in ackers))

    def stop(self, acker: Acker | None = None) -> None:
        """Stop one channel's Acker (or all): its channel is closed."""
        for a in [acker] if acker is not None else list(self._running):
            task = self._running.pop(a, None)
            if task is not None:
                task.cancel()
