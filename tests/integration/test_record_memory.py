"""The record memory keeps an offset per remembered action, and reads the record back for a
replay: the window, the limit, the hand-over from a whole record to its offset, and a stream
that no longer matches. ``offsets.read_offsets`` against a real stream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest

from schemas import ActionKind, EnactmentRecord, EnactmentStatus, ImprovementAction, Plan, encode
from tests.support.broker import Broker
from worker.amqp import streams
from worker.amqp.offsets import last_offset, read_offsets
from worker.core.clock import ManualClock
from worker.core.errors import OptimiserError
from worker.core.memory import RecordMemory
from worker.core.optimiser import AsyncSelfOptimiser
from worker.core.planstep import PlanStep


def record(action_id: str, at: datetime, *, replay: bool = False) -> EnactmentRecord:
    return EnactmentRecord(
        plan_id="p",
        action=ImprovementAction(
            action_id=action_id, module_name="m", action_kind=ActionKind.NO_OP
        ),
        status=EnactmentStatus.SKIPPED,
        detail="no-op",
        attempted_at=at,
        replay=replay,
    )


class Stream:
    """Records by offset, as the state stream holds them (a group's in one message); counts
    the reads."""

    def __init__(self) -> None:
        self.records: dict[int, list[EnactmentRecord]] = {}
        self.reads = 0

    async def fetch(self, offsets: list[int]) -> dict[int, list[EnactmentRecord]]:
        self.reads += 1
        return {offset: self.records[offset] for offset in offsets}


async def test_a_record_read_back_is_kept_as_its_offset_and_fetched_for_a_replay() -> None:
    clock = ManualClock()
    stream = Stream()
    memory = RecordMemory(window_s=60, limit=10, clock=clock, fetch=stream.fetch)
    own = record("a", clock.now())
    memory.remember(own)  # just published: kept whole
    assert "a" in memory
    assert await memory.recall(["a"]) == {"a": own}
    assert stream.reads == 0

    stream.records[7] = [own]
    memory.located("a", 7)  # the stream handed it back
    assert await memory.recall(["a"]) == {"a": own}
    assert stream.reads == 1

    learnt, grouped = record("b", clock.now()), record("c", clock.now())
    stream.records[8] = [learnt, grouped]
    memory.remember(learnt, 8)  # another worker's, from the stream: a group of two
    memory.remember(grouped, 8)
    assert await memory.recall(["a", "b", "c", "d"]) == {"a": own, "b": learnt, "c": grouped}
    assert stream.reads == 2  # one read for all three
    assert len(memory) == 3


async def test_the_first_record_is_kept_replays_and_copies_change_nothing() -> None:
    clock = ManualClock()
    stream = Stream()
    memory = RecordMemory(window_s=60, limit=10, clock=clock, fetch=stream.fetch)
    first = record("a", clock.now())
    stream.records[1] = [first]
    memory.remember(first, 1)
    clock.advance(5)
    memory.remember(record("a", clock.now()), 2)  # a later copy
    memory.remember(record("r", clock.now(), replay=True), 3)  # a replay of one unknown
    memory.located("a", 2)
    assert await memory.recall(["a"]) == {"a": first}
    assert "r" not in memory


async def test_records_leave_after_the_window_and_beyond_the_limit_oldest_first() -> None:
    clock = ManualClock()
    memory = RecordMemory(window_s=60, limit=3, clock=clock)
    for n in range(3):
        memory.remember(record(f"old-{n}", clock.now()), n)
    clock.advance(30)
    memory.remember(record("mid", clock.now()))  # whole: not read back yet
    assert [a for a in ("old-0", "old-1", "old-2", "mid") if a in memory] == [
        "old-1",
        "old-2",
        "mid",
    ]  # beyond the limit, the oldest left

    clock.advance(31)  # the old ones are 61 s old, "mid" 31 s
    memory.remember(record("new", clock.now()), 9)
    assert [a for a in ("old-1", "old-2", "mid", "new") if a in memory] == ["mid", "new"]

    clock.advance(30)  # "mid" (kept whole) 61 s old
    memory.remember(record("newer", clock.now()), 10)
    assert [a for a in ("mid", "new", "newer") if a in memory] == ["new", "newer"]


async def test_ids_loaded_from_checkpoints_keep_the_window_and_the_limit_oldest_first() -> None:
    clock = ManualClock()
    stream = Stream()
    memory = RecordMemory(window_s=60, limit=5, clock=clock, fetch=stream.fetch)
    ms = int(clock.now().timestamp() * 1000)
    memory.load(["a", "b"], [1, 2], [ms - 70_000, ms - 20_000])
    memory.load(["c"], [3], [ms - 5_000])  # a second checkpoint message
    assert [a for a in ("a", "b", "c", "x") if a in memory] == ["b", "c"]  # "a": too old
    assert len(memory) == 2
    stream.records[2] = [record("b", clock.now() - timedelta(seconds=20))]
    assert await memory.recall(["b", "x"]) == {"b": stream.records[2][0]}
    assert not memory.remember(record("b", clock.now()))  # known: not remembered again

    for n in range(4):
        assert memory.remember(record(f"n{n}", clock.now()), 10 + n)
    assert len(memory) == 5
    assert "b" not in memory  # beyond the limit, the oldest loaded one left first
    assert "c" in memory

    clock.advance(56)  # "c" is 61 s old now
    memory.remember(record("n9", clock.now()), 20)
    assert "c" not in memory
    assert len(memory) == 5


def test_many_loaded_ids_are_each_found_and_no_other() -> None:
    clock = ManualClock()
    memory = RecordMemory(window_s=3600, limit=1_000_000, clock=clock)
    ms = int(clock.now().timestamp() * 1000)
    ids = [f"plan-{n // 10}-{n % 10}" for n in range(100_000)]
    memory.load(ids, list(range(100_000)), [ms] * 100_000)
    assert all(action_id in memory for action_id in ids)
    assert not any(f"plan-{n}-x" in memory for n in range(10_000))
    assert len(memory) == 100_000


async def test_a_stream_that_holds_another_record_at_the_offset_is_an_error() -> None:
    clock = ManualClock()
    stream = Stream()
    memory = RecordMemory(window_s=60, limit=10, clock=clock, fetch=stream.fetch)
    memory.remember(record("a", clock.now()), 4)
    stream.records[4] = [record("someone-else", clock.now())]
    with pytest.raises(OptimiserError, match="holds no record of a at offset 4"):
        await memory.recall(["a"])


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


async def test_when_the_originals_cannot_be_read_back_nothing_of_the_plan_is_enacted() -> None:
    clock = ManualClock()

    async def unavailable(offsets: list[int]) -> dict[int, list[EnactmentRecord]]:
        raise streams.StreamUnavailable("the state stream did not answer")

    memory = RecordMemory(window_s=60, limit=10, clock=clock, fetch=unavailable)
    memory.remember(record("before", clock.now()), 3)
    optimiser = AsyncSelfOptimiser(clock=clock)
    step = PlanStep(optimiser, memory, clock=clock)
    plan = Plan(
        plan_id="again",
        actions=[
            ImprovementAction(action_id=i, module_name="m", action_kind=ActionKind.NO_OP)
            for i in ("before", "new")
        ],
    )
    with pytest.raises(streams.StreamUnavailable):
        await step.run(plan)
    assert "new" not in memory  # not enacted: the plan can come again whole


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
