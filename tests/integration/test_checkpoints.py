"""Checkpoints of the state log: which ones a restart may trust, and a restart that uses them."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace

import aio_pika
import aiormq
import msgspec
import pytest

from schemas import EnactmentStatus
from schemas.logs import (
    CHECKPOINT_TYPE,
    Checkpoint,
    CheckpointHead,
    decode_checkpoint,
    encode_checkpoint,
)
from tests.support.broker import Broker, read_stream
from tests.support.factories import plan_of, wait_for
from tests.support.subsystems import CountingLoad
from tests.support.workers import ServerStarter, WorkerStarter
from worker import Subsystems
from worker.amqp import checkpointing
from worker.amqp.checkpoints import Chain, CheckpointFollower, Offer, write
from worker.amqp.offsets import last_offset, read_offsets
from worker.amqp.state import FreshIndex
from worker.amqp.streams import MARKER_TYPE

LOG = "N.results.log"


def head(first: int, last: int, *, start: bool = False, final: bool = True) -> CheckpointHead:
    return CheckpointHead(stream=LOG, first=first, last=last, last_id="", start=start, final=final)


def test_a_chain_takes_what_follows_on_and_nothing_after_a_gap() -> None:
    chain = Chain(LOG)
    assert chain.offer(head(10, 20)) is Offer.STARTS
    assert chain.offer(head(21, 30)) is Offer.EXTENDS
    assert chain.offer(head(15, 40)) is Offer.EXTENDS  # overlaps: a second writer
    assert chain.offer(head(20, 35)) is Offer.IGNORED  # covered already
    assert chain.offer(head(50, 60)) is Offer.IGNORED  # a gap: 41..49 is in no checkpoint
    assert chain.covered == 40
    assert chain.offer(head(45, 70, start=True)) is Offer.STARTS  # all its writer knew
    assert (chain.first, chain.covered) == (45, 70)
    other = CheckpointHead(stream="other", first=71, last=80, last_id="", start=False, final=True)
    assert chain.offer(other) is Offer.IGNORED


def test_a_write_goes_on_from_what_is_covered_in_messages_of_bounded_size() -> None:
    entries = [(offset, f"a{offset}", 1000 + offset) for offset in range(0, 100, 3)]
    index = FreshIndex()
    for entry in entries:
        index.append(*entry)
    flagged = datetime(2026, 11, 25, tzinfo=UTC)
    flags = [(31, "a30", flagged)]
    messages = list(write(
        LOG, 20, first_read=0, last=99, last_id="m99", index=index, flags=flags,
        guard_records=[], per_message=10,
    ))  # fmt: skip
    assert [(m.first, m.last, m.start, m.final) for m in messages] == [
        (21, 48, False, False),
        (49, 78, False, False),
        (79, 99, False, True),
    ]
    assert messages[0].ids[0] == "a21"
    assert messages[-1].ids[-1] == "a99"
    assert sum(len(m.ids) for m in messages) == len([e for e in entries if e[0] > 20])
    assert [m.last_id for m in messages] == ["", "", "m99"]
    assert messages[0].flags == [("a30", flagged)]
    assert decode_checkpoint(encode_checkpoint(messages[0])) == messages[0]
    [dump] = write(
        LOG, None, first_read=7, last=99, last_id="m99", index=index, flags=[],
        guard_records=[],
    )  # fmt: skip
    index.forget_through(50)
    assert index.offsets[0] == 51
    assert index.ids[0] == "a51"
    assert (dump.first, dump.start, len(dump.ids)) == (
        7,
        True,
        len([e for e in entries if e[0] >= 7]),
    )


def _reader(*heads: CheckpointHead) -> CheckpointFollower:
    reader = CheckpointFollower("N.checkpoints", Chain(LOG))
    for one in heads:
        body = encode_checkpoint(Checkpoint(**{f: getattr(one, f) for f in one.__struct_fields__}))
        reader.take(_Delivered(body))  # type: ignore[arg-type]
    return reader


class _Delivered:
    """As much of a delivered message as ``take`` reads."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.header = SimpleNamespace(
            properties=aiormq.spec.Basic.Properties(message_type=CHECKPOINT_TYPE)
        )


def test_a_restart_loads_the_chain_up_to_its_last_final_message_if_it_reaches_back() -> None:
    reader = _reader(
        head(5, 10), head(11, 20, final=False), head(21, 30), head(31, 40, final=False)
    )
    chosen = reader.restored(lower=8)
    assert not isinstance(chosen, str)
    bodies, final = chosen
    assert (len(bodies), final.last) == (3, 30)
    assert reader.chain.covered == 30  # the next write goes on from there, not from 40

    late = _reader(head(9, 10), head(11, 20))
    assert "after the window's first" in str(late.restored(lower=8))
    assert late.chain.covered is None  # the next write covers all it knows
    assert "no final" in str(_reader(head(5, 10, final=False)).restored(lower=8))
    assert "no complete" in str(_reader().restored(lower=8))


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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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
