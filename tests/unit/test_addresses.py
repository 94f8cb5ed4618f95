"""Several broker addresses (worker/addresses.py): the order they are tried in, where the
next attempt starts after a failure, failovers counted, and nothing secret in what is logged."""

from __future__ import annotations

import pytest

from worker.addresses import Addresses, host_port, split_urls

URLS = "amqp://u:pw@a:5681/, amqp://u:pw@b:5682/,amqp://u:pw@c:5683/"


def test_a_comma_separated_list_gives_each_address_once_blanks_ignored() -> None:
    assert split_urls(URLS) == ["amqp://u:pw@a:5681/", "amqp://u:pw@b:5682/", "amqp://u:pw@c:5683/"]
    assert split_urls("amqp://x/") == ["amqp://x/"]
    with pytest.raises(ValueError, match="no broker address"):
        split_urls(" , ")


def test_only_host_and_port_are_shown() -> None:
    assert host_port("amqp://user:secret@node-1:5681/vhost") == "node-1:5681"
    assert host_port("amqps://user:secret@node-2/") == "node-2:5671"
    assert host_port("amqp://node-3") == "node-3:5672"
    assert "secret" not in host_port("amqp://user:secret@h:notaport/")


def test_after_a_failure_the_next_attempt_starts_from_the_following_address() -> None:
    failovers: list[int] = []
    addresses = Addresses.parse(URLS, lambda: failovers.append(1))
    assert addresses.order() == [0, 1, 2]
    addresses.connected(0)
    addresses.failed()  # the connection to a was lost
    assert addresses.order() == [1, 2, 0]
    addresses.failed(1)  # b refused too
    assert addresses.order() == [2, 0, 1]
    addresses.connected(2)
    assert failovers == [1]  # a -> c
    addresses.failed()
    assert addresses.order() == [0, 1, 2]  # wraps around


def test_a_first_connection_or_a_reconnection_to_the_same_node_is_no_failover() -> None:
    failovers: list[int] = []
    addresses = Addresses.parse(URLS, lambda: failovers.append(1))
    addresses.connected(1)
    addresses.connected(1)
    assert failovers == []


def test_a_single_address_is_always_tried_first() -> None:
    addresses = Addresses.parse("amqp://a/")
    addresses.connected(0)
    addresses.failed()
    assert addresses.order() == [0]
