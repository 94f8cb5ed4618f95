"""Broker I/O (RabbitMQ, aio-pika), one module per role:

- ``topology``: the queues and exchanges the worker declares, and the parking queue's gauge;
- ``acker``: settling deliveries in order, per channel;
- ``publishing``: confirmed outcomes, replies and dead letters;
- ``session``: one session's intake (messages into the pipeline) and settlement (answers
  into outcomes, replies and acks);
- ``partitions``: partitioned mode (scaling out), on top of the session;
- ``run``: one session's life, from connecting to the drain.
"""

from worker.broker.acker import Acker
from worker.broker.run import ConnectionLost, run_session
from worker.broker.topology import declare_topology
from worker.wirenames import REASON_HEADER, UNROUTED_MAX_LENGTH, unrouted_name

__all__ = [
    "REASON_HEADER",
    "UNROUTED_MAX_LENGTH",
    "Acker",
    "ConnectionLost",
    "declare_topology",
    "run_session",
    "unrouted_name",
]
