"""A small async client for services that feed bulkops: publish requests, await replies.

```python
from worker.client import Chunk, Client, Job

async with Client.connect("amqp://guest:guest@127.0.0.1:5672/") as client:
    job = Job("datocms.items.publish", target="main", environment="sandbox-1")
    reply = await client.request(job, Chunk(ids=["hWl-mnkWRYmMCSTq4z_piQ"]))
    print(reply.counts, [item.error for item in reply.items if item.status != "succeeded"])
```
"""

from worker.client.connection import (
    DEFAULT_REQUEST_QUEUE,
    Answer,
    BrokerError,
    Chunk,
    Client,
    queue_exists,
)
from worker.client.control import ControlClient, ControlPublishError, ControlRefused
from worker.client.job import MAX_PER_MESSAGE, Job, JobError
from worker.client.operations import CONTRACT_OPERATIONS, OperationSpec
from worker.client.outcomes import OUTCOMES_TYPE, outcome_items
from worker.client.replies import STATUSES, Counts, ErrorBody, Reply, ReplyItem, Status

__all__ = [
    "CONTRACT_OPERATIONS",
    "DEFAULT_REQUEST_QUEUE",
    "MAX_PER_MESSAGE",
    "OUTCOMES_TYPE",
    "STATUSES",
    "Answer",
    "BrokerError",
    "Chunk",
    "Client",
    "ControlClient",
    "ControlPublishError",
    "ControlRefused",
    "Counts",
    "ErrorBody",
    "Job",
    "JobError",
    "OperationSpec",
    "Reply",
    "ReplyItem",
    "Status",
    "outcome_items",
    "queue_exists",
]
