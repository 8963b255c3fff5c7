"""``offsets.read_offsets`` against a real stream: what the record memory reads back for a
replay (the memory itself: ``tests/unit/test_record_memory.py``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest

from schemas import encode
from tests.support.broker import Broker
from tests.support.factories import record
from worker.amqp import streams
from worker.amqp.offsets import last_offset, read_offsets


async def test_read_offsets_gives_the_messages_at_offsets_and_says_when_one_is_not_there(
    broker: Broker,
) -> None:
    stream_name = f"{broker.names.namespace}.read-at"
    queue = await broker.channel.declare_queue(
        stream_name, durable=True, arguments={"x-queue-type": "stream"}
    )
    broker.extra_queues.append(stream_name)
    now = datetime.now(UTC)
    sent = [record(f"r-{n}", now + timedelta(seconds=n)) for n in range(5)]
    for each in sent:
        await broker.channel.default_exchange.publish(
            aio_pika.Message(encode(each)), routing_key=queue.name
        )
    connection = await aio_pika.connect_robust(broker.url)
    async with connection:
        for offsets in ([3], [4, 0, 2], [1, 1]):
            read = await read_offsets(connection, stream_name, offsets, timeout_s=10)
            assert {o: m.body for o, m in read.items()} == {o: encode(sent[o]) for o in offsets}
        with pytest.raises(streams.StreamUnavailable, match=r"offsets 2\.\.5 within"):
            await read_offsets(connection, stream_name, [2, 5], timeout_s=1)


async def test_read_offsets_says_when_retention_took_an_offset(broker: Broker) -> None:
    stream_name = f"{broker.names.namespace}.truncated"
    queue = await broker.channel.declare_queue(
        stream_name,
        durable=True,
        arguments={
            "x-queue-type": "stream",
            "x-stream-max-segment-size-bytes": 2_000,
            "x-max-length-bytes": 4_000,
        },
    )
    broker.extra_queues.append(stream_name)
    now = datetime.now(UTC)
    for n in range(200):
        await broker.channel.default_exchange.publish(
            aio_pika.Message(encode(record(f"r-{n}", now))), routing_key=queue.name
        )
    connection = await aio_pika.connect_robust(broker.url)
    async with connection:
        last = await last_offset(connection, stream_name)
        with pytest.raises(streams.StreamUnavailable, match="no longer holds offset 0"):
            await read_offsets(connection, stream_name, [0, last], timeout_s=10)
        read = await read_offsets(connection, stream_name, [last], timeout_s=10)
        assert read[last].body == encode(record("r-199", now))


async def test_read_offsets_reads_a_run_longer_than_the_prefetch(broker: Broker) -> None:
    # Offsets 900 apart make one run (a redelivered plan's records, interleaved with others'),
    # spanning three times the consumer's prefetch: the reader must keep the credit flowing.
    stream_name = f"{broker.names.namespace}.long-run"
    queue = await broker.channel.declare_queue(
        stream_name, durable=True, arguments={"x-queue-type": "stream"}
    )
    broker.extra_queues.append(stream_name)
    bodies = [f"message {n}".encode() for n in range(2 * streams.STREAM_PREFETCH + 800)]
    channel = await broker.connection.channel(publisher_confirms=True)
    await asyncio.gather(
        *(
            channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
            for body in bodies
        )
    )
    wanted = list(range(0, len(bodies), 900))
    connection = await aio_pika.connect_robust(broker.url)
    async with connection:
        read = await read_offsets(connection, stream_name, wanted, timeout_s=10)
    assert {o: m.body for o, m in read.items()} == {o: bodies[o] for o in wanted}
