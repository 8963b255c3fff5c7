"""Checkpoints of the state log on a real broker: a restart that uses them, and the ones it must
not trust."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import aio_pika
import msgspec
import pytest

from schemas import EnactmentStatus
from schemas.logs import CHECKPOINT_TYPE, Checkpoint, encode_checkpoint
from tests.support.broker import Broker, read_stream
from tests.support.factories import plan_of, wait_for
from tests.support.subsystems import CountingLoad
from tests.support.workers import ServerStarter, WorkerStarter
from worker import Subsystems
from worker.amqp import checkpointing
from worker.amqp.offsets import last_offset, read_offsets
from worker.amqp.streams import MARKER_TYPE


def _restored_line(messages: list[str]) -> re.Match[str]:
    lines = [m for m in messages if m.startswith("state restored from")]
    found = re.search(r": (\d+) records since (.*), (\d+) action ids", lines[-1])
    assert found, lines
    return found


@dataclass
class Served:
    """A load shedder served over AMQP that counts what it applied, a queue of every record,
    and the log at INFO: what each restart test starts from."""

    load: CountingLoad
    results: str


@pytest.fixture
async def served(broker: Broker, serve: ServerStarter, caplog: pytest.LogCaptureFixture) -> Served:
    caplog.set_level(logging.INFO)
    load = CountingLoad()
    await serve(Subsystems(load=load))
    return Served(load, (await broker.results_queue()).name)


async def test_a_restarted_worker_reads_the_checkpoints_not_the_records_and_forgets_nothing(
    broker: Broker,
    start_worker: WorkerStarter,
    served: Served,
    caplog: pytest.LogCaptureFixture,
) -> None:
    load, results = served.load, served.results
    first = await start_worker(checkpoint_records=5)
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="before"))
    for n in range(10):
        await broker.publish_plan(plan_of("NO_OP", "NO_OP", plan_id=f"idle{n}"))
    await broker.records(results, expect=21)
    await wait_for(lambda: any("checkpoint of" in m for m in caplog.messages), what="a checkpoint")
    await first.shutdown()

    caplog.clear()
    await start_worker()
    loaded = [m for m in caplog.messages if m.startswith("checkpoints of")]
    assert loaded, caplog.messages
    restored = _restored_line(caplog.messages)
    assert int(restored[1]) < 21  # not every record read again
    assert restored[2].startswith("offset ")
    assert int(restored[3]) == 21  # yet every action id remembered

    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="before"))  # sent again
    await broker.publish_plan(plan_of("NO_OP", "NO_OP", plan_id="idle3"))  # and this one
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="after"))  # same module, new id
    replayed, *idle, limited = await broker.records(results, expect=4)
    assert replayed.replay
    assert replayed.status is EnactmentStatus.SUCCESS
    assert all(r.replay for r in idle)
    assert limited.status is EnactmentStatus.RATE_LIMITED  # the cool-down, from the checkpoint
    assert load.applied == {"before-0": 1}


async def test_checkpoints_that_name_another_stream_are_not_trusted(
    broker: Broker,
    start_worker: WorkerStarter,
    served: Served,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A final checkpoint whose message is not in the state log (the stream was declared anew,
    or the checkpoint lies): the window is read whole, and nothing is forgotten."""
    load, results = served.load, served.results
    first = await start_worker(checkpoint_records=1)
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="before"))
    await broker.records(results, expect=1)
    await wait_for(lambda: any("checkpoint of" in m for m in caplog.messages), what="a checkpoint")
    await first.shutdown()
    written = [m for m in caplog.messages if "checkpoint of" in m]
    covered = int(re.findall(r"offsets \d+ to (\d+)", written[-1])[0])
    await _publish_checkpoint(broker, Checkpoint(
        stream=broker.names.results_log, first=covered + 1, last=covered + 5, last_id="forged",
        start=False, final=True,
    ))  # fmt: skip

    caplog.clear()
    await start_worker(fence_timeout_s=2.0)
    assert any("declared anew" in m for m in caplog.messages), caplog.messages
    assert _restored_line(caplog.messages)[2] != ""  # read by time
    assert not _restored_line(caplog.messages)[2].startswith("offset")
    await _remembers(broker, results, load, enacted="before")


async def test_a_standby_that_takes_over_goes_on_from_the_active_ones_checkpoints(
    broker: Broker,
    start_worker: WorkerStarter,
    served: Served,
    caplog: pytest.LogCaptureFixture,
) -> None:
    load, results = served.load, served.results
    active = await start_worker(checkpoint_records=1)
    standby = await start_worker(checkpoint_records=1)
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="first"))
    await broker.records(results, expect=1)
    await wait_for(lambda: _written(caplog.messages), what="the active worker's checkpoint")
    [(_, covered)] = _written(caplog.messages)
    await active.shutdown()

    await broker.publish_plan(plan_of("NO_OP", plan_id="second"))
    await broker.records(results, expect=1)
    await wait_for(lambda: len(_written(caplog.messages)) == 2, what="the standby's checkpoint")
    assert _written(caplog.messages)[1][0] == covered + 1  # goes on: not all it knew again
    await standby.shutdown()

    caplog.clear()
    await start_worker()
    assert any(m.startswith("checkpoints of") for m in caplog.messages), caplog.messages
    assert int(_restored_line(caplog.messages)[3]) == 2
    await _remembers(broker, results, load, enacted="first")


def _written(messages: list[str]) -> list[tuple[int, int]]:
    """(first, last) offset of each checkpoint written, in order."""
    found = (re.search(r"checkpoint of .*, offsets (\d+) to (\d+)", m) for m in messages)
    return [(int(f[1]), int(f[2])) for f in found if f]


async def _remembers(broker: Broker, results: str, load: CountingLoad, *, enacted: str) -> None:
    """The plan ``enacted`` sent again is replayed, and its cool-down holds for a new one."""
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id=enacted))
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="new"))  # same module, new id
    replayed, limited = await broker.records(results, expect=2)
    assert replayed.replay
    assert limited.status is EnactmentStatus.RATE_LIMITED
    assert load.applied == {f"{enacted}-0": 1}


async def _publish_checkpoint(broker: Broker, checkpoint: Checkpoint) -> None:
    connection = await aio_pika.connect(broker.url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(broker.names.checkpoints)
        await exchange.publish(
            aio_pika.Message(encode_checkpoint(checkpoint), type=CHECKPOINT_TYPE),
            routing_key="",
        )
    finally:
        await connection.close()


@pytest.mark.parametrize(("reuse_s", "fences"), [(0.0, range(20, 40)), (1.0, range(1, 10))])
async def test_a_fence_serves_the_plans_after_it_for_fence_reuse_s(
    broker: Broker, start_worker: WorkerStarter, reuse_s: float, fences: range
) -> None:
    """Each fence is a marker in the state log: one per plan with ``fence_reuse_s`` 0, a few
    for a burst of twenty within one second (and two more for the restore)."""
    results = await broker.results_queue()
    await start_worker(fence_reuse_s=reuse_s)
    before = await _markers(broker)
    for n in range(20):
        await broker.publish_plan(plan_of("NO_OP", plan_id=f"burst{n}"))
    await broker.records(results.name, expect=20)
    assert (await _markers(broker)) - before in fences


async def _markers(broker: Broker) -> int:
    """Markers in the state log, read from its first message until nothing comes for 1 s."""
    messages = await read_stream(broker.connection, broker.names.results_log, quiet_s=1.0)
    return sum(kind == MARKER_TYPE for kind, _ in messages)


async def test_a_checkpoint_the_stream_lost_is_written_again(
    broker: Broker,
    start_worker: WorkerStarter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Confirmed, yet never in ``N.checkpoints`` (made here by binding its exchange to another
    queue while it is written): not read back, so the same range is written again."""
    monkeypatch.setattr(checkpointing, "CHECKPOINT_READ_BACK_S", 1.0)
    caplog.set_level(logging.INFO)
    results = await broker.results_queue()
    elsewhere = await broker.channel.declare_queue(exclusive=True)
    exchange = broker.names.checkpoints
    await start_worker(checkpoint_records=1)  # declares the binding: undone after
    stream = await broker.channel.get_queue(exchange)
    await stream.unbind(exchange, "")
    await elsewhere.bind(exchange, "")
    await broker.publish_plan(plan_of("NO_OP", plan_id="one"))
    await broker.records(results.name, expect=1)
    await wait_for(lambda: _written(caplog.messages), what="a checkpoint")
    await stream.bind(exchange, "")
    await elsewhere.unbind(exchange, "")
    await broker.publish_plan(plan_of("NO_OP", plan_id="two"))  # so that it writes again
    await broker.records(results.name, expect=1)
    await wait_for(lambda: len(_written(caplog.messages)) >= 2, what="a second checkpoint")
    first, second = _written(caplog.messages)[:2]
    assert second[0] == first[0]  # from where the lost one began, not after it
    assert second[1] > first[1]


async def test_a_checkpoint_that_cannot_be_read_is_not_loaded_at_all(
    broker: Broker,
    start_worker: WorkerStarter,
    served: Served,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A chain whose head reads but whose index does not (a writer of another version, a
    corrupt message): nothing of it is loaded, the window is read whole, nothing forgotten."""
    load, results = served.load, served.results
    first = await start_worker()  # writes no checkpoint: its first is due in five minutes
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="before"))
    await broker.records(results, expect=1)
    await first.shutdown()
    log_name = broker.names.results_log
    last = await last_offset(broker.connection, log_name)
    there = await read_offsets(broker.connection, log_name, [last], 10.0)
    body = msgspec.msgpack.encode(
        {
            "stream": log_name, "first": 0, "last": last, "start": True, "final": True,
            "last_id": there[last].header.properties.message_id, "ids": [1, 2],
        }
    )  # fmt: skip
    exchange = await broker.channel.get_exchange(broker.names.checkpoints)
    await exchange.publish(aio_pika.Message(body, type=CHECKPOINT_TYPE), routing_key="")

    caplog.clear()
    await start_worker()
    assert any("cannot be read" in m for m in caplog.messages), caplog.messages
    await _remembers(broker, results, load, enacted="before")
