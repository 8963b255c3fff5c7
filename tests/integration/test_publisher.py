"""Publisher.publish_bodies on a real broker: many messages written in one go, each one's
confirm, return or failure told apart and given back in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue

from tests.support.broker import Broker
from tests.support.messages import message
from worker.amqp.errors import PublishFailed
from worker.amqp.publisher import Outgoing, Publisher


@dataclass
class Bound:
    """A direct exchange of the test's namespace, with a queue bound to routing key "in"."""

    publisher: Publisher
    channel: AbstractChannel
    exchange: str
    queue: AbstractQueue


@pytest.fixture
async def bound(broker: Broker) -> AsyncIterator[Bound]:
    channel = await broker.connection.channel(publisher_confirms=True, on_return_raises=False)
    name = f"{broker.names.namespace}.test-publisher"
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT)
    queue = await channel.declare_queue(name)
    broker.extra_queues.append(queue.name)
    await queue.bind(exchange, "in")
    try:
        yield Bound(Publisher(channel, timeout_s=5.0), channel, name, queue)
    finally:
        await exchange.delete()
        await channel.close()


async def received(queue: AbstractQueue, count: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with asyncio.timeout(10):
        while len(got) < count:
            taken = await queue.get(fail=False, no_ack=True)
            if taken is None:
                await asyncio.sleep(0.05)
            else:
                got.append(taken)
    return got


async def test_each_message_is_told_routed_or_returned_in_its_place(bound: Bound) -> None:
    """A return is matched to its message by id: the unroutable ones among routable ones."""
    messages = [
        message(bound.exchange, "in" if i % 3 else "nowhere", f"body {i}".encode(), f"id-{i}")
        for i in range(30)
    ]
    outcomes = await bound.publisher.publish_bodies(messages)

    assert outcomes == [bool(i % 3) for i in range(30)]
    got = await received(bound.queue, 20)
    assert [m.body for m in got] == [f"body {i}".encode() for i in range(30) if i % 3]
    assert [m.message_id for m in got] == [f"id-{i}" for i in range(30) if i % 3]


async def test_one_id_twice_in_a_batch_is_sent_twice_and_each_told_apart(bound: Bound) -> None:
    messages = [
        message(bound.exchange, "nowhere", b"first", "same"),
        message(bound.exchange, "in", b"second", "same"),
        message(bound.exchange, "nowhere", b"third", "same"),
    ]
    assert await bound.publisher.publish_bodies(messages) == [False, True, False]
    assert [m.body for m in await received(bound.queue, 1)] == [b"second"]


async def test_a_body_larger_than_a_frame_arrives_whole(bound: Bound) -> None:
    big = bytes(range(256)) * 2_000  # 512,000 bytes: several body frames (frame_max 131,072)
    outcomes = await bound.publisher.publish_bodies(
        [
            message(bound.exchange, "in", big, "big"),
            message(bound.exchange, "in", b"small", "small"),
        ]
    )
    assert outcomes == [True, True]
    assert [m.body for m in await received(bound.queue, 2)] == [big, b"small"]


async def test_messages_without_an_id_get_one_each_and_the_properties_stay_as_given(
    bound: Bound,
) -> None:
    shared = aiormq.spec.Basic.Properties(delivery_mode=2)
    outcomes = await bound.publisher.publish_bodies(
        [Outgoing(bound.exchange, key, body, shared) for key, body in
         [("in", b"a"), ("in", b"b"), ("nowhere", b"c")]]
    )  # fmt: skip
    assert outcomes == [True, True, False]
    assert shared.message_id is None
    ids = [m.message_id for m in await received(bound.queue, 2)]
    assert len(set(ids)) == 2
    assert all(ids)


async def test_a_nack_is_a_failure_of_that_message_alone(broker: Broker, bound: Bound) -> None:
    """A queue that refuses what goes beyond its length: the broker nacks the second."""
    full = await bound.channel.declare_queue(
        f"{broker.names.namespace}.test-full",
        arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
    )
    broker.extra_queues.append(full.name)
    await full.bind(bound.exchange, "full")

    outcomes = await bound.publisher.publish_bodies(
        [message(bound.exchange, key, body, f"f{body.decode()}") for key, body in
         [("full", b"1"), ("full", b"2"), ("in", b"3")]]
    )  # fmt: skip
    assert outcomes[0] is True
    assert isinstance(outcomes[1], PublishFailed)
    assert "refused" in str(outcomes[1])
    assert "'full'" in str(outcomes[1])
    assert outcomes[2] is True


async def test_a_channel_closed_before_the_confirms_fails_them_and_the_next_batch_goes_through(
    broker: Broker,
) -> None:
    """The channel closed under a batch whose confirms are due (as aiormq drops a channel on a
    missed heartbeat): each message a PublishFailed, none raised, and the robust channel, once
    reopened, publishes again."""
    channel = await broker.connection.channel(publisher_confirms=True, on_return_raises=False)
    name = f"{broker.names.namespace}.test-closed"
    queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    broker.extra_queues.append(name)
    publisher = Publisher(channel, timeout_s=5.0)
    underlay = await channel.get_underlay_channel()
    assert isinstance(underlay, aiormq.Channel)
    try:
        sending = asyncio.create_task(
            publisher.publish_bodies([message("", name, b"x", f"m-{i}") for i in range(100)])
        )
        while len(underlay.confirmations) < 100:
            await asyncio.sleep(0)
        await underlay.close()
        outcomes = await sending
        assert all(isinstance(o, PublishFailed) for o in outcomes), outcomes
        assert "channel closed" in str(outcomes[0])

        async with asyncio.timeout(10):
            while await publisher.publish_bodies([message("", name, b"after", "after")]) != [True]:
                await asyncio.sleep(0.2)
        assert (await queue.declare()).message_count >= 1
    finally:
        await channel.close()
