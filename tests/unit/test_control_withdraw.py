"""Cancels in the pipeline (issue 23): ``Coalescer.withdraw`` (pure) and the batch format's
message id of cancellations."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.test_control_state import control as record
from worker.batching import BatchKey, Coalescer, withdraw
from worker.control.state import ControlState
from worker.messages import Request
from worker.metrics import Metrics
from worker.outcomes import Heading, OutcomeBatch
from worker.pipeline import control
from worker.pipeline.requests import Tracked
from worker.registry import OPERATIONS

PUBLISH = OPERATIONS["datocms.items.publish"]
UNPUBLISH = OPERATIONS["datocms.items.unpublish"]
PUB = BatchKey(operation=PUBLISH.name, target="main", scope=None)
UNPUB = BatchKey(operation=UNPUBLISH.name, target="main", scope=None)


def test_withdraw_takes_only_the_selected_waiters_of_unsent_items() -> None:
    c = Coalescer()
    cancelled, kept = object(), object()
    a = c.add(PUBLISH, PUB, "a", cancelled, 1.0)
    c.add(PUBLISH, PUB, "a", kept, 1.0)  # joins item a: shared with a request that stays
    c.add(PUBLISH, PUB, "b", cancelled, 1.0)
    c.add(PUBLISH, PUB, "c", kept, 1.0)
    taken = withdraw(c, lambda item, w: w is cancelled, 2.0)
    assert sorted((item.id, w is cancelled) for item, w in taken) == [("a", True), ("b", True)]
    assert a.waiters == [kept]  # still sent, for the other requester
    assert c.pending == 2
    assert [item.id for item in c.take(PUB)] == ["a", "c"]


def test_sent_items_keep_their_waiters() -> None:
    c = Coalescer()
    w = object()
    c.add(PUBLISH, PUB, "a", w, 1.0)
    (sent,) = c.take(PUB)
    c.add(PUBLISH, PUB, "b", w, 1.0)
    taken = withdraw(c, lambda item, waiter: True, 2.0)
    assert [item.id for item, _ in taken] == ["b"]
    assert sent.waiters == [w] and c.pending == 1
    assert c.done(sent, 3.0) is None and c.pending == 0


def test_a_withdrawn_ready_head_makes_the_next_of_its_id_ready() -> None:
    """publish a (cancelled) then unpublish a (kept): the unpublish becomes ready at once."""
    c = Coalescer()
    gone, kept = object(), object()
    c.add(PUBLISH, PUB, "a", gone, 1.0)
    later = c.add(UNPUBLISH, UNPUB, "a", kept, 1.0)
    assert c.size(UNPUB) == 0  # waits behind the publish
    taken = withdraw(c, lambda item, w: w is gone, 5.0)
    assert [(item.key, w) for item, w in taken] == [(PUB, gone)]
    assert c.size(PUB) == 0 and c.size(UNPUB) == 1 and later.ready_at == 5.0
    assert c.take(UNPUB) == [later]


def test_an_item_in_the_middle_of_a_chain_leaves_it_and_order_holds() -> None:
    """sent publish, unsent unpublish (cancelled), unsent publish (kept): the last waits for
    the first to finish, then is ready."""
    c = Coalescer()
    gone, kept = object(), object()
    first = c.add(PUBLISH, PUB, "a", kept, 1.0)
    assert c.take(PUB) == [first]
    c.add(UNPUBLISH, UNPUB, "a", gone, 1.0)
    last = c.add(PUBLISH, PUB, "a", kept, 1.0)
    withdraw(c, lambda item, w: w is gone, 2.0)
    assert c.size(PUB) == 0 and c.size(UNPUB) == 0  # still behind the sent one
    assert c.done(first, 3.0) is last and c.take(PUB) == [last]
    assert c.done(last, 4.0) is None and c.pending == 0


def test_withdraw_keeps_the_byte_count_right() -> None:
    c = Coalescer()
    gone = object()
    c.add(PUBLISH, PUB, "a", gone, 1.0, cost=10)
    c.add(PUBLISH, PUB, "b", object(), 1.0, cost=7)
    withdraw(c, lambda item, w: w is gone, 2.0)
    assert c._queues[PUB].bytes == 7


def test_cancellations_have_their_own_batch_message_id() -> None:
    heading = Heading("r1", PUBLISH.name, "main", ())
    rejected = OutcomeBatch(heading, "rejected", None, 0, "t", (), "r1")
    withdrawn = OutcomeBatch(heading, "rejected", None, 0, "t", (), "r1", "cancelled")
    assert rejected.message_id == "r1:datocms.items.publish:rejected"
    assert withdrawn.message_id == "r1:datocms.items.publish:cancelled"
    assert withdrawn.routing_key == "datocms.items.publish.rejected"


def test_hold_queue_names_are_readable_safe_and_bounded() -> None:
    from pamqp.constants import DOMAIN_REGEX

    from worker.broker.hold import hold_name
    from worker.settings import Settings

    settings = Settings(_env_file=None, request_queue="bulkops.requests")  # type: ignore[call-arg]
    assert hold_name(settings, ("shop", None)) == "bulkops.requests.held.shop"
    assert (
        hold_name(settings, ("shop", ("catalog_id", "a b/c")))
        == "bulkops.requests.held.shop.catalog_id.a+20b+2Fc"
    )
    primary = hold_name(settings, ("main", ("environment", None)))
    assert primary == "bulkops.requests.held.main.environment.@primary"
    odd = hold_name(settings, ("shop", ("catalog_id", "~a%b")))
    assert odd == "bulkops.requests.held.shop.catalog_id.+7Ea+25b"
    for name in (primary, odd):  # what AMQP clients accept (pamqp refuses the rest)
        assert DOMAIN_REGEX["queue-name"].match(name)
    long_one = hold_name(settings, ("shop", ("catalog_id", "x" * 300)))
    other = hold_name(settings, ("shop", ("catalog_id", "x" * 299 + "y")))
    assert len(long_one.encode()) <= 255 and long_one != other


def test_the_interrupt_report_counts_withdrawn_done_and_never_published(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from worker.cli.interrupt import Interrupt
    from worker.cli.submit import Tally

    tally = Tally()
    tally.statuses.update({"succeeded": 100, "rejected": 250})
    tally.codes[("rejected", "cancelled")] = 250
    halt = Interrupt.__new__(Interrupt)
    halt.unanswered = {"req-9": ["a", "b"]}
    assert halt.report(tally, 1000, "ids") == 130
    err = capsys.readouterr().err
    assert "100 ids were done (answered), 250 withdrawn (cancelled)" in err
    assert "2 ids published have no answer yet: bulkops cancel req-9 --reason" in err
    assert "648 ids were never published" in err


@pytest.mark.parametrize(("cancel_at", "covered"), [(90.0, False), (110.0, True)])
def test_a_request_without_a_timestamp_counts_as_published_when_consumed_both_ways(
    cancel_at: float, covered: bool
) -> None:
    """A scope cancel covers what was published at or before it; a message without an AMQP
    timestamp counts as published when consumed (here at 100), at intake and live alike."""
    state = ControlState(1000.0)
    state.apply(record("cancel", cancel_at, target="main"), now=cancel_at)
    req = Request("r1", PUBLISH, "main", None, ("a", "b"), ())
    tracked = Tracked(None, req, None, None, 2, consumed_at=100.0)  # type: ignore[arg-type]
    assert tracked.published_at == 100.0
    at_intake = control.cancel_of(state, req, tracked.published_at, 120.0)
    c = Coalescer()
    for item_id in req.ids:
        c.add(PUBLISH, PUB, item_id, tracked, 1.0)
    metrics = Metrics(CollectorRegistry())
    live = control.withdraw(c, state, metrics, 2.0, 120.0)
    assert (at_intake is not None) is covered
    assert sorted(a.item_id for a in live) == (["a", "b"] if covered else [])
