"""``Client``: publish bulkops requests (confirmed, ``mandatory``) and await their replies.

Replies come to one exclusive, server-named queue per client (a named ``reply_to``, as the
contract allows), consumed with a prefetch: a slow reader holds replies back in the broker
instead of in memory, and the queue goes away with the connection. Replies are matched to
requests by ``correlation_id``, which the client sets to the request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import threading
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from pydantic import ValidationError

from worker.addresses import Addresses
from worker.client.control import ControlClient
from worker.client.job import Job
from worker.client.outcomes import outcome_items
from worker.client.replies import Reply
from worker.wirenames import PRIORITY_SUFFIX

log = logging.getLogger("bulkops.client")

T = TypeVar("T")
DEFAULT_REQUEST_QUEUE = "bulkops.requests"
REPLY_PREFETCH = 32
OUTCOME_PREFETCH = 64
DEFAULT_RESULTS_EXCHANGE = "bulkops.results"


class BrokerError(Exception):
    """The broker lost the connection, or refused, returned or did not confirm a publish."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """The ids or the items of one request message."""

    ids: list[str] | None = None
    items: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.ids if self.ids is not None else self.items or ())

    def keys(self) -> list[str]:
        """The ids, or the items' ids (as text), in order."""
        if self.ids is not None:
            return list(self.ids)
        return [str(item.get("id")) for item in self.items or ()]


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply, with how many ids or items its request carried, and those of them the reply
    does not list (a message refused as a whole: its top-level ``error`` says why)."""

    reply: Reply
    sent: int
    unanswered: tuple[str, ...] = ()


def answer(reply: Reply, sent: list[str]) -> Answer:
    if len(reply.items) >= len(set(sent)):
        return Answer(reply, len(sent))
    listed = {item.id for item in reply.items}
    missing = tuple(k for k in dict.fromkeys(sent) if k not in listed)
    return Answer(reply, len(sent), missing)


@dataclass(frozen=True, slots=True)
class _Arrived:
    request_id: str
    reply: Reply | BrokerError


@dataclass(frozen=True, slots=True)
class _Finished:
    published: int
    error: Exception | None


class Client:
    """One connection to the broker, publishing to ``request_queue``. Use ``Client.connect``."""

    def __init__(
        self,
        connection: AbstractConnection,
        channel: AbstractChannel,
        request_queue: str,
        *,
        every_item: bool = True,
    ) -> None:
        self._connection = connection
        self._every_item = every_item
        self._channel = channel
        self.request_queue = request_queue
        self._reply_queue: str | None = None
        self._waiting: dict[str, Callable[[Reply | BrokerError], None]] = {}
        self._prefix = uuid.uuid4().hex[:12]
        self._sequence = itertools.count(1)
        connection.close_callbacks.add(self._on_close)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, url: str, request_queue: str = DEFAULT_REQUEST_QUEUE, *, priority: bool = False
    ) -> AsyncIterator[Client]:
        """Connect (``url`` may list a cluster's nodes, comma-separated: the first that
        answers is used), check that ``request_queue`` exists, and yield a client.
        ``priority``: publish to its priority lane (``<request queue>.priority``)."""
        addresses = Addresses.parse(url)
        connection = await addresses.connect(
            client_properties={"connection_name": "bulkops-client"}
        )
        async with connection:
            yield await cls.create(connection, request_queue, priority=priority)

    @classmethod
    async def create(
        cls,
        connection: AbstractConnection,
        request_queue: str,
        *,
        every_item: bool = True,
        priority: bool = False,
    ) -> Client:
        """A client over a connection the caller opened (and closes). With ``every_item``
        (the default) a request holding an id or item the worker would reject raises JobError
        unpublished; without it, such ids and items are published and answered ``rejected``
        by the worker (what ``bulkops submit`` does with a file: exit 1, as the contract
        says). A request the worker would refuse as a whole raises JobError either way.
        With ``priority`` the requests go to the priority lane, ahead of the backlog
        (CONTRACT "Priority lane")."""
        if priority:
            request_queue += PRIORITY_SUFFIX
        await queue_exists(connection, request_queue)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(connection, channel, request_queue, every_item=every_item)

    def control(self, **kwargs: Any) -> ControlClient:
        """Cancel, pause, resume and status on this client's connection (``ControlClient``'s
        keywords: ``exchange``, ``cancel_ttl_seconds``, ``targets``, ``app_id``)."""
        return ControlClient(self._connection, **kwargs)

    def new_request_id(self) -> str:
        """Unique per client and readable in logs: ``<random prefix>-<sequence>``."""
        return f"{self._prefix}-{next(self._sequence):06d}"

    async def publish(
        self,
        job: Job,
        chunk: Chunk,
        *,
        request_id: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Publish one request message and wait for the broker's confirm; its request id.
        JobError, and nothing published, when the worker would refuse it (see ``create``)."""
        request_id = request_id or self.new_request_id()
        body, _ = job.request(request_id, chunk.ids, chunk.items, every_item=self._every_item)
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=request_id,
            correlation_id=request_id,
            reply_to=reply_to,
            timestamp=datetime.now(UTC),
        )
        try:
            confirmation = await self._channel.default_exchange.publish(
                message, self.request_queue, mandatory=True
            )
        except aiormq.exceptions.DeliveryError as exc:
            raise BrokerError(f"request {request_id} was returned by the broker: {exc}") from exc
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException) as exc:
            raise BrokerError(f"request {request_id} could not be published: {exc!r}") from exc
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise BrokerError(f"request {request_id} was not confirmed: {confirmation!r}")
        return request_id

    async def request(self, job: Job, chunk: Chunk) -> Reply:
        """Publish one request with ``reply_to`` and wait for its reply."""
        async with contextlib.aclosing(self.submit(job, [chunk])) as answers:
            async for answer in answers:
                return answer.reply
        raise BrokerError("no reply")  # pragma: no cover - submit answers every chunk

    async def submit(
        self,
        job: Job,
        chunks: Iterable[Chunk] | AsyncIterable[Chunk],
        *,
        window: int = 16,
        stop: asyncio.Event | None = None,
        unanswered: dict[str, list[str]] | None = None,
    ) -> AsyncGenerator[Answer, None]:
        """Publish a request per chunk with ``reply_to``, at most ``window`` unanswered at
        once, and yield each reply as it comes (in the order they come). Chunks are read only
        as the window allows: memory does not grow with their number. An error raised while
        reading ``chunks`` is raised once every request published before it is answered.
        A job that no worker would take raises JobError before anything is published.
        ``stop``: once set, nothing more is published (what was is still answered; to
        withdraw it, cancel it: ``control().cancel(list(unanswered))``); ``unanswered``: a
        dict this call keeps as request id -> ids of each request published and not yet
        answered."""
        job.check()
        reply_to = await self._replies()
        arrivals: asyncio.Queue[_Arrived | _Finished] = asyncio.Queue()
        slots = asyncio.Semaphore(window)
        # request id -> its ids, while unanswered
        sent: dict[str, list[str]] = {} if unanswered is None else unanswered
        producer = asyncio.create_task(
            self._publish_all(job, chunks, reply_to, slots, sent, arrivals, stop)
        )
        try:
            async for answer in _collect(arrivals, slots, sent):
                yield answer
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
            for request_id in sent:
                self._waiting.pop(request_id, None)

    async def _publish_all(
        self,
        job: Job,
        chunks: Iterable[Chunk] | AsyncIterable[Chunk],
        reply_to: str,
        slots: asyncio.Semaphore,
        sent: dict[str, list[str]],
        arrivals: asyncio.Queue[_Arrived | _Finished],
        stop: asyncio.Event | None = None,
    ) -> None:
        published = 0
        try:
            async for chunk in iterate(chunks):
                if not await _slot(slots, stop):
                    break
                request_id = self.new_request_id()
                sent[request_id] = chunk.keys()
                self._waiting[request_id] = _putter(arrivals, request_id)
                try:
                    await self.publish(job, chunk, request_id=request_id, reply_to=reply_to)
                except BaseException:
                    del sent[request_id]
                    self._waiting.pop(request_id, None)
                    raise
                published += 1
        except Exception as exc:  # the input's or the broker's: raised after the answers
            arrivals.put_nowait(_Finished(published, exc))
        else:
            arrivals.put_nowait(_Finished(published, None))

    async def outcomes(
        self,
        results_exchange: str = DEFAULT_RESULTS_EXCHANGE,
        binding: str = "#",
        ready: asyncio.Event | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item's outcome published to ``results_exchange`` from now on (routing keys
        matching ``binding``), one at a time, whichever format the worker publishes (the item
        format's body for each). Reads a private queue that goes away with the iterator; a
        message is acked once all of its items were taken. ``ready`` is set once bound."""
        channel = await self._connection.channel()
        try:
            await channel.set_qos(prefetch_count=OUTCOME_PREFETCH)
            await channel.get_exchange(results_exchange)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(results_exchange, binding)
            if ready is not None:
                ready.set()
            async with queue.iterator() as messages:
                async for message in messages:
                    try:
                        items = outcome_items(message.body)
                    except ValueError:
                        log.warning("unreadable outcome %r skipped", message.message_id)
                        items = []
                    for item in items:
                        yield item
                    await message.ack()
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _replies(self) -> str:
        """The reply queue's name; declared and consumed on first use."""
        if self._reply_queue is None:
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=REPLY_PREFETCH)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.consume(self._on_reply)
            self._reply_queue = queue.name
        return self._reply_queue

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        correlation_id = message.correlation_id or ""
        deliver = self._waiting.pop(correlation_id, None)
        if deliver is None:
            log.warning("reply %r matches no request of this client", correlation_id)
        else:
            try:
                deliver(Reply.model_validate_json(message.body))
            except ValidationError as exc:
                deliver(BrokerError(f"unreadable reply to {correlation_id}: {exc}"))
        await message.ack()

    def _on_close(self, *_: Any) -> None:
        waiting, self._waiting = self._waiting, {}
        for deliver in waiting.values():
            deliver(BrokerError("the connection to the broker was lost"))


def _putter(
    arrivals: asyncio.Queue[_Arrived | _Finished], request_id: str
) -> Callable[[Reply | BrokerError], None]:
    def put(reply: Reply | BrokerError) -> None:
        arrivals.put_nowait(_Arrived(request_id, reply))

    return put


async def _collect(
    arrivals: asyncio.Queue[_Arrived | _Finished],
    slots: asyncio.Semaphore,
    sent: dict[str, list[str]],
) -> AsyncIterator[Answer]:
    finished: _Finished | None = None
    answered = 0
    while finished is None or answered < finished.published:
        event = await arrivals.get()
        if isinstance(event, _Finished):
            finished = event
            continue
        if isinstance(event.reply, BrokerError):
            raise event.reply
        answered += 1
        slots.release()
        yield answer(event.reply, sent.pop(event.request_id))
    if finished.error is not None:
        raise finished.error


async def iterate(source: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """Iterate either kind. A plain iterable is advanced in a daemon thread, one step at a
    time: it may block on a pipe, and meanwhile the event loop keeps serving replies and
    heartbeats; a step still blocked when the program ends (Ctrl-C on a terminal's standard
    input) does not keep it alive."""
    if isinstance(source, AsyncIterable):
        async for item in source:
            yield item
        return
    iterator: Iterator[T] = iter(source)
    loop = asyncio.get_running_loop()
    while True:
        step: asyncio.Future[tuple[T] | tuple[()]] = loop.create_future()
        threading.Thread(target=_advance, args=(iterator, step, loop), daemon=True).start()
        got = await step
        if not got:
            return
        yield got[0]


def _advance(
    iterator: Iterator[T],
    step: asyncio.Future[tuple[T] | tuple[()]],
    loop: asyncio.AbstractEventLoop,
) -> None:
    try:
        result: tuple[T] | tuple[()] = next(((v,) for v in iterator), ())
    except Exception as exc:
        outcome: Callable[[], None] = functools.partial(_settle, step, None, exc)
    else:
        outcome = functools.partial(_settle, step, result, None)
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(outcome)


def _settle(
    step: asyncio.Future[tuple[T] | tuple[()]],
    result: tuple[T] | tuple[()] | None,
    error: Exception | None,
) -> None:
    if step.done():
        return
    if error is not None:
        step.set_exception(error)
    else:
        step.set_result(result if result is not None else ())


async def queue_exists(connection: AbstractConnection, name: str) -> int:
    """The depth of queue ``name``; BrokerError when it does not exist (a passive declare,
    on a channel of its own: a 404 closes the channel)."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity as exc:
        raise BrokerError(f"queue {name!r} does not exist (is the worker deployed?)") from exc
    finally:
        if not channel.is_closed:
            await channel.close()
    return queue.declaration_result.message_count or 0


async def _slot(slots: asyncio.Semaphore, stop: asyncio.Event | None) -> bool:
    """Take a slot of the window; False (none taken) once ``stop`` is set."""
    if stop is None:
        await slots.acquire()
        return True
    if stop.is_set():
        return False
    acquire = asyncio.ensure_future(slots.acquire())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not acquire.done():
        acquire.cancel()
        return False
    if stop.is_set():
        slots.release()
        return False
    return True
