"""Prometheus metrics on an injected registry. Labels stay bounded: never ids or catalog ids.

``operation`` is one of the known operations or ``invalid``; ``target`` one of the configured
targets or ``unknown``; ``code`` one of ``worker.registry.KNOWN_CODES`` or ``other``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_FILL = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
_SIZES = (1, 2, 5, 10, 25, 50, 100, 200, 500, 1000, 2500, 5000, 10000)


class Metrics:
    """Every metric of the worker, registered on ``registry`` (never the global one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        op_t = ("operation", "target")
        self.messages_consumed = Counter(
            "bulkops_messages_consumed",
            "Request messages consumed.",
            ["operation", "target"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "bulkops_dead_lettered_messages",
            "Request messages parked on the dead-letter queue.",
            ["reason"],
            registry=registry,
        )
        self.item_outcomes = Counter(
            "bulkops_item_outcomes",
            "Item outcomes, by status (every item, whichever outcomes BULKOPS_ITEM_OUTCOMES "
            "publishes).",
            [*op_t, "status"],
            registry=registry,
        )
        self.item_failures = Counter(
            "bulkops_item_failures",
            "Failed or rejected items, by error code (bounded set).",
            [*op_t, "code"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "bulkops_batch_size_items",
            "Items per API batch.",
            op_t,
            buckets=_SIZES,
            registry=registry,
        )
        self.batch_fill = Histogram(
            "bulkops_batch_fill_ratio",
            "Batch size over the API's maximum.",
            op_t,
            buckets=_FILL,
            registry=registry,
        )
        self.api_requests = Counter(
            "bulkops_api_requests",
            "HTTP requests sent to the APIs, by status code.",
            ["target", "endpoint", "code"],
            registry=registry,
        )
        self.api_latency = Histogram(
            "bulkops_api_request_duration_seconds",
            "HTTP request latency.",
            ["target", "endpoint"],
            buckets=_LATENCY,
            registry=registry,
        )
        self.rate_limited = Counter(
            "bulkops_api_rate_limited",
            "429 answers received.",
            ["target"],
            registry=registry,
        )
        self.rate_limit_wait = Histogram(
            "bulkops_rate_limit_wait_seconds",
            "Time a request waited for its rate limiter.",
            ["target"],
            buckets=_LATENCY,
            registry=registry,
        )
        self.rate_limit_used = Gauge(
            "bulkops_rate_limit_used_requests",
            "Requests in the current window of the busiest rate scope of a target.",
            ["target"],
            registry=registry,
        )
        self.rate_limit_allowed = Gauge(
            "bulkops_rate_limit_allowed_requests",
            "Requests a rate scope may send per window.",
            ["target"],
            registry=registry,
        )
        self.pending_items = Gauge(
            "bulkops_pending_items",
            "Items consumed and not yet answered.",
            op_t,
            registry=registry,
        )
        self.inflight_batches = Gauge(
            "bulkops_inflight_batches",
            "Batches being sent or followed.",
            op_t,
            registry=registry,
        )
        self.item_wait = Histogram(
            "bulkops_item_wait_seconds",
            "Time from consumption to the item's first send.",
            op_t,
            buckets=_LATENCY,
            registry=registry,
        )
        self.job_duration = Histogram(
            "bulkops_job_duration_seconds",
            "DatoCMS job time, submit to result.",
            op_t,
            buckets=_LATENCY,
            registry=registry,
        )
        self.job_timeouts = Counter(
            "bulkops_job_timeouts",
            "DatoCMS jobs that outlived their deadline.",
            op_t,
            registry=registry,
        )
        self.retries = Counter(
            "bulkops_retries",
            "Requests sent again after a retryable error.",
            [*op_t, "reason"],
            registry=registry,
        )
        self.end_to_end = Histogram(
            "bulkops_end_to_end_latency_seconds",
            "Request message timestamp to outcome published.",
            op_t,
            buckets=_LATENCY,
            registry=registry,
        )
        self.lane_latency = Histogram(
            "bulkops_lane_latency_seconds",
            "Request message timestamp to outcome published, per lane (main or priority).",
            ["lane"],
            buckets=_LATENCY,
            registry=registry,
        )
        self.lane_items = Counter(
            "bulkops_lane_items",
            "Ids consumed per lane (main or priority).",
            ["lane"],
            registry=registry,
        )
        self.lane_depth = Gauge(
            "bulkops_lane_queue_depth",
            "Messages ready in each lane's request queue (main or priority), as last sampled.",
            ["lane"],
            registry=registry,
        )
        self.partitions_owned = Gauge(
            "bulkops_partitions_owned",
            "Partitioned mode: partition queues this replica consumes as the active consumer "
            "(those it has had a delivery from).",
            registry=registry,
        )
        self.partition_handovers = Counter(
            "bulkops_partition_handovers_total",
            "Partitioned mode: partitions this replica handed on to another.",
            ["reason"],
            registry=registry,
        )
        self.partition_bundles = Counter(
            "bulkops_partition_bundles_total",
            "Partitioned mode: bundles (several requests in one message) the router forwarded.",
            registry=registry,
        )
        self.partition_bundled = Counter(
            "bulkops_partition_bundled_requests_total",
            "Partitioned mode: requests the router forwarded inside bundles.",
            registry=registry,
        )
        self.replies_published = Counter(
            "bulkops_replies_published",
            "Replies to request messages with a reply_to, confirmed by the broker.",
            registry=registry,
        )
        self.replies_dropped = Counter(
            "bulkops_replies_dropped",
            "Replies dropped because their reply_to queue (or direct reply-to requester) was "
            "gone; their requests were acked all the same.",
            registry=registry,
        )
        self.outcomes_parked = Counter(
            "bulkops_outcomes_parked",
            "Outcome messages that matched no binding of the results exchange (returned to "
            "the mandatory publish) and were parked in <results exchange>.unrouted.",
            registry=registry,
        )
        self.broker_failovers = Counter(
            "bulkops_broker_failovers",
            "Connections made to another address of BULKOPS_AMQP_URL than the last one "
            "connected to, after it failed.",
            registry=registry,
        )
        self.unrouted_outcomes = Gauge(
            "bulkops_unrouted_outcomes",
            "Outcomes that matched no binding, parked in <results exchange>.unrouted, as "
            "last sampled.",
            registry=registry,
        )
        self.control_invalid = Counter(
            "bulkops_control_invalid",
            "Control messages that break the contract's rules: logged and ignored.",
            ["reason"],
            registry=registry,
        )
        self.control_applied = Counter(
            "bulkops_control_applied",
            "Valid control records read from the control stream, by command.",
            ["command"],
            registry=registry,
        )
        self.paused_scopes = Gauge(
            "bulkops_paused_scopes",
            "Scopes paused by an operator (bulkops pause), per target.",
            ["target"],
            registry=registry,
        )
        self.pause_oldest = Gauge(
            "bulkops_pause_started_seconds",
            "When the target's oldest pause in force began (epoch seconds; 0: none).",
            ["target"],
            registry=registry,
        )
        self.held_items = Gauge(
            "bulkops_held_items",
            "Items of paused scopes this worker holds unsent, per target, as last sampled.",
            ["target"],
            registry=registry,
        )
        self.ready = Gauge(
            "bulkops_ready",
            "1 while connected to the broker and consuming.",
            registry=registry,
        )
