"""Names the wire contract fixes on the broker side, pure (no aio-pika): the dead-letter
reason header, the parking queue's name and bound. ``worker.broker`` uses them;
``worker.contract`` documents them without importing the broker's I/O."""

from __future__ import annotations

from typing import Protocol

REASON_HEADER = "x-bulkops-reason"
ORIGIN_HEADER = "x-bulkops-original-queue"  # the request queue (or lane) a dead letter left
# On a request without an AMQP timestamp moved to a hold queue: when the worker first
# consumed it (float epoch seconds), what a scope cancel compares with; read only on intake
# from a hold queue (on a request queue, a publisher could backdate its message with it).
CONSUMED_AT_HEADER = "x-bulkops-consumed-at"
UNROUTED_MAX_LENGTH = 100_000  # outcomes parked at most; the oldest are dropped beyond


PRIORITY_SUFFIX = ".priority"
# Partitioned mode: a message that only tells a partition's owner its priority queue has
# work (worker/broker/partition_topology.py); never a request, dropped wherever it ends up.
MARKER_HEADER = "x-bulkops-priority-marker"


class _Named(Protocol):
    @property
    def results_exchange(self) -> str: ...


class _Requests(Protocol):
    @property
    def request_queue(self) -> str: ...


def priority_name(settings: _Requests) -> str:
    """The priority lane: ``<request queue>.priority`` (CONTRACT "Priority lane")."""
    return settings.request_queue + PRIORITY_SUFFIX


def unrouted_name(settings: _Named) -> str:
    """The parking queue of outcomes that matched no binding (and the fanout exchange of the
    same name bound to it, for operators who give the results exchange an alternate
    exchange by policy)."""
    return f"{settings.results_exchange}.unrouted"


# A request partly sent when its scope was paused, moved to the scope's hold queue with what
# of it was already answered (worker/pipeline/continuation.py); read only from a hold queue.
CONTINUATION_TYPE = "bulkops.continuation"

# Partitioned mode: requests the router forwards together to one partition queue
# (worker/bundles.py); read only from a partition queue.
BUNDLE_TYPE = "bulkops.bundle"
