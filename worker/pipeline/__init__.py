"""The pipeline between the broker edges: intake, per-scope dispatch, batch execution,
settlement and hand-over. No AMQP here: the broker session feeds it and publishes for it."""
