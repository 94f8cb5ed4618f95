"""Operator control (CONTRACT "Control", issue 23): cancel, pause/resume, status.

API for the wiring (the pipeline, the CLI and the client build on these; nothing here
imports the pipeline):

- ``messages.parse_control(body, ControlProps, targets, arrival) -> Control | ControlInvalid``:
  the one validation the CLI, the client and the worker share (pure). ``control_body(...)``
  and ``check(body)`` raise ``ControlRefused(code, reason)`` for the CLI and the client.
  ``Control.scope`` is None for the whole target, else ``(field, value)`` with value None
  for the primary (``"environment": null``): "absent" and "null" stay distinct.
- ``state.ControlState(cancel_ttl)``: ``apply(control, now)`` in stream order; asks
  ``cancelled(request_id, now)``, ``scope_cancelled(target, (field, value), published_at,
  now)``, ``paused(target, (field, value))`` (a whole-target pause covers each scope),
  ``pauses()`` / ``cancels(now)`` for status (who, why, since). Pure.
- ``reader.ControlReader(amqp_url, state, exchange=, targets=, metrics=, on_record=,
  snapshot=)``: ``await start()`` before consuming any request; ``on_record(control,
  changed)`` is called for each record read live (answer held items of a cancel, release a
  resumed scope); ``snapshot()`` returns a ``transport.WorkerSnapshot`` for status replies.
  ``await close()`` at shutdown.
- ``transport.publish_control(channel, body, exchange=, app_id=, user_id=, reply_to=,
  correlation_id=)``: validates, publishes persistent on a confirm channel, returns the
  message id once confirmed, raises ``ControlRefused`` (invalid) or ``ControlPublishError``
  (not confirmed). ``status_body`` / ``answer_status`` build and send a status reply.
- Settings: ``Settings.control_exchange`` (``BULKOPS_CONTROL_EXCHANGE``, ``bulkops.control``)
  and ``Settings.cancel_ttl_seconds`` (``BULKOPS_CANCEL_TTL_SECONDS``, 86400); the CLI's
  ``ClientSettings`` has both too. ``config`` holds the stream's name and retention.
- Operators: ``bulkops cancel|pause|resume|status`` (``worker.cli.control``) and the client's
  ``ControlClient`` (``worker.client.control``, also ``Client.control()``).

Design:

- Topology: ``BULKOPS_CONTROL_EXCHANGE`` is a durable fanout exchange bound to one durable
  stream ``<control exchange>.state`` (``x-queue-type: stream``, ``x-max-age`` = the cancel
  TTL plus one day, in seconds: ``"172800s"`` by default). Every control message is kept
  there; every replica reads the whole stream (non-destructive reads), so each hears every
  message, including one sent before it started. Publishers declare it too, so a message
  sent before any worker ran is kept. RabbitMQ 3.10 over AMQP 0-9-1, measured: a stream
  consumer needs a channel prefetch (``basic.qos``; without it PRECONDITION_FAILED),
  manual acks (``no_ack`` closes the connection, NOT_IMPLEMENTED) and ``x-stream-offset``
  (``first``, a number, or a timestamp); each delivery carries its ``x-stream-offset``.
- End detection: AMQP 0-9-1 has no end-of-stream marker. A starting reader consumes from
  ``first``, then publishes (confirmed) a sentinel of its own (AMQP type
  ``bulkops.control.sentinel``, a unique message id; every reader ignores sentinels) and
  is caught up when it reads that sentinel back: everything stored before it has been
  applied. 5,000 records: about 0.8 s on the local broker.
- Reconnection: the reader tracks the offset of the last record applied and, on a new
  connection, resumes at the next one: nothing is applied twice. (Applying the whole
  stream again would also give the same state: ``ControlState`` is idempotent in order.)
- Retention vs TTL and rewrites: a cancel is kept while in force (retention is a day
  longer than the TTL) and expires ``cancel_ttl`` after it was sent. A pause lasts until
  resumed, so each reader writes the pauses in force again every hour (``REWRITE_SECONDS``),
  as a pause whose headers name the pause as first sent (``x-bulkops-rewrite-of``: its
  message id, ``x-bulkops-since``, its ``user_id``/``app_id``). Rewrites by many replicas
  are harmless: a pause in force is not changed by another of the same scope (its first time
  and sender stay), and a rewrite of a pause already resumed (one that raced a resume) is
  ignored by its origin id, so it never re-pauses a scope.
- Time and scope cancels: a control message's time is its AMQP ``timestamp`` (the CLI and
  the client set it), clamped to no later than its arrival at the reader. A cancel without
  a timestamp is refused (``no_timestamp``): a 3.10 stream delivery carries no arrival time
  of its own (only ``x-stream-offset``, checked on 3.10.8), so every read would give it a
  new time and every restart would restart its TTL; a pause or resume without one takes its
  arrival at the reader. A scope cancel withdraws items of
  requests whose AMQP ``timestamp`` is at or before the cancel's time (same second counts:
  AMQP timestamps are whole seconds). A request without a timestamp counts as published when
  the worker first consumed it: a scope cancel withdraws it if the worker held it when the
  cancel came, never work consumed later (no "cancel all future work for a day"); so a
  backlog published without timestamps and still queued is not withdrawn by a scope cancel
  (cancel it by request id).
- Invalid control messages are logged (message id, app id, reason; never a body or a
  credential), counted in ``bulkops_control_invalid_total{reason}`` and ignored; nothing is
  dead-lettered (every replica hears every message). ``status`` records are answered only
  live and when under a minute old.
- RabbitMQ 4.x: streams over AMQP 0-9-1 work the same (prefetch, manual acks,
  ``x-stream-offset``). 4.x can also stamp arrival times on messages itself (message
  interceptors, 3.12+), which could replace the arrival rule for requests without a
  timestamp; stream filtering (3.13+) is not needed here.
"""
