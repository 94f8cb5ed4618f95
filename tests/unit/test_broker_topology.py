"""The arguments of the queues the worker declares (worker/broker/topology.py): quorum
everywhere, the delivery limit on request queues only, and on the DLQ and parking queue
none on RabbitMQ 3.x but -1 (unlimited) on 4.x."""

from __future__ import annotations

from worker.broker.topology import holding_arguments, request_arguments, version_major
from worker.settings import Settings


def settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg, arg-type]


def test_request_queues_are_quorum_with_the_delivery_limit_and_dead_letter_to_the_dlq() -> None:
    arguments = request_arguments(settings(delivery_limit=7, dead_letter_queue="d"), False)
    assert arguments == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 7,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "d",
        "x-dead-letter-strategy": "at-least-once",  # never dropped on the way to the DLQ
        "x-overflow": "reject-publish",  # what at-least-once needs
    }
    assert request_arguments(settings(), True)["x-single-active-consumer"] is True


def test_the_default_delivery_limit_is_well_above_rabbitmq_4s_default_of_20() -> None:
    assert settings().delivery_limit >= 50


def test_holding_queues_never_drop_for_redeliveries_on_3x_or_4x() -> None:
    assert holding_arguments(3) == {"x-queue-type": "quorum"}  # on 3.x -1 would drop at once
    assert holding_arguments(4, **{"x-max-length": 5}) == {
        "x-queue-type": "quorum",
        "x-max-length": 5,
        "x-delivery-limit": -1,
    }


def test_the_major_version_is_read_from_the_server_properties() -> None:
    assert version_major({"version": b"4.1.2", "product": b"RabbitMQ"}) == 4
    assert version_major({"version": "3.10.8"}) == 3
    assert version_major({}) == 3
    assert version_major({"version": "unknown"}) == 3
