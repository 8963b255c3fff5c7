"""Durable guardrail state on a real broker: no action enacted twice, cool-downs kept."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aio_pika
import aiormq
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from schemas import ActionKind, EnactmentRecord, EnactmentStatus, ImprovementAction, encode
from schemas.logs import FLAGGED_TYPE, RECORDS_TYPE, records_of
from tests.support.broker import Broker, rabbitmqctl, read_stream
from tests.support.factories import no_op_plan, plan_of, wait_for
from tests.support.subsystems import CountingLoad
from tests.support.workers import ServerStarter, WorkerStarter
from worker import Subsystems
from worker.amqp import streams
from worker.amqp.errors import TopologyMismatch
from worker.amqp.publisher import Publisher
from worker.amqp.review import AmqpReviewSink
from worker.amqp.state import StateFollower
from worker.amqp.worker import Worker
from worker.core.clock import SystemClock
from worker.core.errors import PlanLost
from worker.core.memory import FlagMemory, RecordMemory
from worker.core.optimiser import AsyncSelfOptimiser
from worker.settings import WorkerSettings


async def test_a_plan_sent_again_is_not_enacted_again_its_records_are_replayed(
    broker: Broker, start_worker: WorkerStarter, serve: ServerStarter
) -> None:
    load = CountingLoad()
    await serve(Subsystems(load=load))
    running = await start_worker()
    results = await broker.results_queue()
    plan = plan_of("REDUCE_LOAD", "NO_OP", plan_id="again")

    await broker.publish_plan(plan)
    first = await broker.records(results.name, expect=2)
    await broker.publish_plan(plan)
    second = await broker.records(results.name, expect=2)

    assert load.applied == {"again-0": 1}
    assert [r.replay for r in first] == [False, False]
    assert [r.replay for r in second] == [True, True]
    assert [(r.status, r.detail, r.attempted_at) for r in second] == [
        (r.status, r.detail, r.attempted_at) for r in first
    ]
    assert running.metric("asi_optimiser_actions_replayed_total") == 2
    assert running.metric("asi_optimiser_enact_calls_total") == 1


async def test_a_restarted_worker_remembers_what_was_enacted_and_the_cool_downs(
    broker: Broker, start_worker: WorkerStarter, serve: ServerStarter
) -> None:
    load = CountingLoad()
    await serve(Subsystems(load=load))
    results = await broker.results_queue()
    first_worker = await start_worker()
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="before"))
    [enacted] = await broker.records(results.name, expect=1)
    assert enacted.status is EnactmentStatus.SUCCESS
    await first_worker.shutdown()

    await start_worker()  # a new worker: nothing in memory but what the stream gives back
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="before"))  # sent again
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="after"))  # same module, new id
    replayed, limited = await broker.records(results.name, expect=2)

    assert replayed.replay
    assert replayed.status is EnactmentStatus.SUCCESS
    assert limited.action.action_id == "after-0"
    assert limited.status is EnactmentStatus.RATE_LIMITED  # the cool-down survived the restart
    assert load.applied == {"before-0": 1}


@pytest.fixture
def user_who_cannot_read_the_stream(broker: Broker) -> Iterator[tuple[str, str]]:
    """A broker user allowed everything but reading ``N.results.log``; (name, password)."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl")
    name, password = f"{broker.names.namespace}-user", uuid.uuid4().hex
    stream = re.escape(broker.names.results_log)
    rabbitmqctl("add_user", name, password)
    try:
        rabbitmqctl("set_permissions", "-p", "/", name, ".*", ".*", f"^(?!{stream}$).*")
        yield name, password
    finally:
        rabbitmqctl("delete_user", name)


async def test_without_its_state_the_worker_does_not_consume_and_says_why(
    broker: Broker, amqp_url: str, user_who_cannot_read_the_stream: tuple[str, str]
) -> None:
    name, password = user_who_cannot_read_the_stream
    parts = urlsplit(amqp_url)
    url = f"amqp://{name}:{password}@{parts.hostname}:{parts.port or 5672}/"
    settings = WorkerSettings(
        amqp_url=url, namespace=broker.names.namespace, metrics_port=-1, state_timeout_s=2.0
    )
    worker = Worker(settings, registry=CollectorRegistry())
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await wait_for(
            lambda: "guardrail state not restored" in worker.readiness()[1],
            timeout=30,
            what="the worker to say it cannot restore its state",
        )
        ready, why = worker.readiness()
        assert not ready
        assert why.startswith("not consuming: guardrail state not restored (")
        assert "ACCESS_REFUSED" in why
        assert await _consumers(broker) == 0

        # Permission fixed: the worker restores its state on its next try, then consumes.
        await asyncio.to_thread(rabbitmqctl, "set_permissions", "-p", "/", name, ".*", ".*", ".*")
        await wait_for(lambda: worker.readiness()[0], timeout=60, what="the state restored")
        assert await _consumers(broker) == 1
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await running


async def _consumers(broker: Broker) -> int:
    channel = await broker.connection.channel()
    try:
        queue = await channel.declare_queue(broker.names.plans_queue, passive=True)
        return int(queue.declaration_result.consumer_count or 0)
    finally:
        await channel.close()


async def test_a_classic_plans_queue_from_an_older_version_is_refused_with_a_clear_message(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    await broker.channel.declare_queue(broker.names.plans_queue, durable=True)  # classic
    with pytest.raises(TopologyMismatch) as refused:
        await start_worker()
    message = str(refused.value)
    assert "PRECONDITION_FAILED" in message
    assert "cannot be changed in place: move its messages and delete it" in message


async def test_a_record_the_stream_lost_is_found_and_published_again(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    # A confirmed record that never reached N.results.log (as when a stream's leader fails
    # over: rabbitmq-server #9457), made here by unbinding the stream while its group's
    # message goes out, routed to a queue of the test's (so the broker confirms it).
    load = CountingLoad()
    results = await broker.results_queue()
    first = await start_worker(subsystems=Subsystems(load=load))
    stream = await broker.channel.get_queue(broker.names.results_log)
    elsewhere = await broker.channel.declare_queue(f"{broker.names.namespace}.test-elsewhere")
    broker.extra_queues.append(elsewhere.name)
    await elsewhere.bind(broker.names.notes, "")
    await stream.unbind(broker.names.notes, "")
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="lost"))
    [enacted] = await broker.records(results.name, expect=1)  # confirmed, routed elsewhere
    await stream.bind(broker.names.notes, "")
    await elsewhere.unbind(broker.names.notes, "")

    # Found within a second (LOST_AFTER_S), or by the next plan's fence if one comes first.
    await broker.publish_plan(plan_of("NO_OP", plan_id="next"))
    await wait_for(
        lambda: first.metric("asi_optimiser_records_resent_total") == 1,
        what="the lost record published again",
    )
    in_stream = [
        record
        for kind, body in await read_stream(broker.connection, stream.name, quiet_s=1.0)
        for record in records_of(kind, body)
    ]
    assert sorted(r.action.action_id for r in in_stream) == ["lost-0", "next-0"]
    [resent] = [r for r in in_stream if r.action.action_id == "lost-0"]
    assert (resent.replay, resent.attempted_at) == (False, enacted.attempted_at)  # the same fact
    # Published again to the state log only: N.results had it.
    [next_record] = await broker.records(results.name, expect=2, timeout=3)
    assert next_record.plan_id == "next"
    await first.shutdown()

    # A worker that starts from the stream alone knows the action: it is not enacted again.
    await start_worker(subsystems=Subsystems(load=load))
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="lost"))
    [again] = await broker.records(results.name, expect=1)
    assert again.replay
    assert load.applied == {"lost-0": 1}


async def _note_flagged(broker: Broker, action_id: str, flagged_at: datetime) -> None:
    """What a worker writes to the state log before it sends a review item."""
    notes = await broker.channel.get_exchange(broker.names.notes)
    await notes.publish(
        aio_pika.Message(
            b"",
            type=FLAGGED_TYPE,
            headers={"action_id": action_id, "plan_id": "x", "flagged_at": flagged_at.isoformat()},
        ),
        routing_key="",
    )


async def test_an_action_flagged_by_a_worker_that_lost_its_plan_is_flagged_with_the_same_item(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    # The old worker noted the flag (and may have sent the item), then lost the plan before
    # its record went out. Whoever enacts the action next sends that same item again: a
    # copy a reader drops, not a second flag with another time.
    results = await broker.results_queue()
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    await _note_flagged(broker, "taken-0", earlier)
    await start_worker()
    await broker.publish_plan(plan_of("FLAG_FOR_REVIEW", "FLAG_FOR_REVIEW", plan_id="taken"))
    records = await broker.records(results.name, expect=2)
    items = await broker.drain(broker.names.review_queue, expect=3, timeout=3.0)

    assert [(r.status, r.replay) for r in records] == [(EnactmentStatus.SUCCESS, False)] * 2
    flagged = {m.message_id: (m.headers or {})["flagged_at"] for m in items}
    assert len(items) == 2
    assert flagged["taken-0"] == earlier.isoformat()  # the old worker's item, again
    assert flagged["taken-1"] != earlier.isoformat()  # a new flag, noted as such


async def test_a_review_item_is_held_back_once_the_plan_is_lost_and_its_note_stays(
    broker: Broker,
) -> None:
    await broker.declare_topology()
    channel = await broker.connection.channel(publisher_confirms=True, on_return_raises=False)
    flags = FlagMemory(window_s=600, limit=100, clock=SystemClock())
    sink = AmqpReviewSink(
        Publisher(channel, timeout_s=5.0),
        await channel.get_exchange(broker.names.review_exchange),
        notes=await channel.get_exchange(broker.names.notes),
        flags=flags,
        clock=SystemClock(),
    )
    action = ImprovementAction(
        action_id="lost-1", module_name="m", action_kind=ActionKind.FLAG_FOR_REVIEW
    )
    with pytest.raises(PlanLost):
        await sink.submit(action, plan_id="lost", proceed=lambda: False)

    assert await broker.depth(broker.names.review_queue) == 0
    noted = flags.get("lost-1")
    assert noted is not None
    # A worker that reads the state log learns the note, and so flags with the same time.
    learnt = FlagMemory(window_s=600, limit=100, clock=SystemClock())
    follower = StateFollower(
        RecordMemory(window_s=600, limit=100, clock=SystemClock()),
        AsyncSelfOptimiser(),
        broker.names,
        clock=SystemClock(),
        flags=learnt,
    )
    await follower.follow(broker.connection, offset="first")
    await wait_for(lambda: learnt.get("lost-1") is not None, what="the note to be read")
    await follower.close()
    assert learnt.get("lost-1") == noted
    await channel.close()


async def test_a_restore_longer_than_the_state_timeout_goes_on_while_it_makes_progress(
    broker: Broker,
    start_worker: WorkerStarter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A busy hour leaves more in the state window than state_timeout_s takes to read: the
    # restore must not fail (and start again from scratch, for ever) while it is reading.
    monkeypatch.setattr(streams, "PROGRESS_EVERY_S", 0.2)
    await broker.declare_topology()
    now = datetime.now(UTC)
    template = EnactmentRecord(
        plan_id="busy",
        action=ImprovementAction(action_id="x", module_name="m", action_kind=ActionKind.NO_OP),
        status=EnactmentStatus.SKIPPED,
        detail="no-op",
        attempted_at=now,
    )
    count = 10_000
    bodies = [
        encode(msgspec.structs.replace(template, action=msgspec.structs.replace(
            template.action, action_id=f"busy-{n}"
        )))
        for n in range(count)
    ]  # fmt: skip
    underlay = await broker.channel.get_underlay_channel()  # aio-pika's Message is slow
    for n, body in enumerate(bodies):  # a record a message, as version 0.1 wrote them
        await underlay.basic_publish(
            body,
            exchange=broker.names.notes,
            routing_key="NO_OP.SKIPPED.m",
            properties=aiormq.spec.Basic.Properties(
                message_id=f"busy-{n}", message_type="enactment_record"
            ),
        )
    caplog.set_level(logging.INFO, logger="worker.amqp.restore")

    running = await start_worker(state_timeout_s=0.5)  # ready: the restore went on
    follower = running.worker.followers[0]
    assert isinstance(follower, StateFollower)
    assert follower.records_read >= count
    progress = [m for m in caplog.messages if m.startswith("restoring guardrail state: ")]
    assert progress, "a long restore says how far it got"


async def _bound_as_in_0_1(
    broker: Broker,
) -> tuple[aio_pika.abc.AbstractQueue, aio_pika.abc.AbstractQueue]:
    """A results queue of the test's, and the state log bound to N.results as version 0.1 had
    it (every record written to it, one each)."""
    results = await broker.results_queue()  # declares the namespace as this version does
    stream = await broker.channel.get_queue(broker.names.results_log)
    await stream.bind(broker.names.results_exchange, "#")
    return results, stream


async def test_a_namespace_of_version_0_1_loses_its_record_binding_and_the_log_one_per_group(
    broker: Broker, start_worker: WorkerStarter, caplog: pytest.LogCaptureFixture
) -> None:
    results, stream = await _bound_as_in_0_1(broker)
    await start_worker()  # declares the namespace: the old binding goes
    await broker.publish_plan(no_op_plan("grouped", actions=3))
    assert len(await broker.records(results.name, expect=3)) == 3
    messages = await read_stream(broker.connection, stream.name, quiet_s=1.0)
    kinds = [kind for kind, _ in messages if kind != streams.MARKER_TYPE]
    assert kinds == [RECORDS_TYPE]  # the plan's three records in one message, nothing else
    assert not [m for m in caplog.messages if "is still bound to" in m]


async def test_a_worker_that_may_not_declare_says_once_that_the_old_binding_is_still_there(
    broker: Broker, start_worker: WorkerStarter, caplog: pytest.LogCaptureFixture
) -> None:
    results, _ = await _bound_as_in_0_1(broker)
    await start_worker(declare_topology=False)
    for n in range(3):
        await broker.publish_plan(no_op_plan(f"twice-{n}"))
    assert len(await broker.records(results.name, expect=6)) == 6
    await wait_for(
        lambda: any("is still bound to" in m for m in caplog.messages),
        what="the warning about the binding of version 0.1",
    )
    await asyncio.sleep(0.5)
    assert len([m for m in caplog.messages if "is still bound to" in m]) == 1
