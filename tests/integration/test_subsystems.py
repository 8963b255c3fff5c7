"""Subsystems over AMQP: the worker's commands, served by SubsystemServer, on a real broker."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime, timedelta

import aio_pika
import msgspec
import pytest

from schemas import EnactmentStatus, encode, routing_key
from schemas.commands import (
    ReplyOutcome,
    ShedLoad,
    Subsystem,
    SubsystemCommand,
    SubsystemReply,
    TuneThreshold,
)
from tests.support.broker import Broker, rabbitmqctl
from tests.support.factories import EXAMPLE_PLAN, no_op_plan, plan_of
from tests.support.workers import ServerStarter, WorkerStarter
from worker import OptimiserConfig, SubsystemResult, Subsystems, seed_subsystems
from worker.demo.simulated import SimulatedCycle, SimulatedOrchestrator

decode_reply = msgspec.json.Decoder(SubsystemReply).decode


async def test_every_kind_acts_on_the_served_subsystems_as_the_records_say(
    broker: Broker, start_worker: WorkerStarter, serve: ServerStarter
) -> None:
    cycle = SimulatedCycle()
    orchestrator = SimulatedOrchestrator(random.Random(0), failure_rate=0.0)
    server = await serve(seed_subsystems(cycle, orchestrator))
    await start_worker()  # no subsystems given: it sends commands
    results = await broker.results_queue()

    await broker.publish_plan(EXAMPLE_PLAN)
    records = {r.action.action_kind.value: r for r in await broker.records(results.name, expect=6)}

    assert {k: r.status for k, r in records.items()} == {
        "TUNE_THRESHOLD": EnactmentStatus.SUCCESS,
        "INCREASE_BUDGET": EnactmentStatus.SUCCESS,
        "REDUCE_LOAD": EnactmentStatus.SUCCESS,
        "HOT_SWAP_MODULE": EnactmentStatus.SUCCESS,
        "FLAG_FOR_REVIEW": EnactmentStatus.SUCCESS,
        "NO_OP": EnactmentStatus.SKIPPED,
    }
    assert cycle._detector_config.latency_p95_threshold_ms == pytest.approx(240.0)
    assert records["TUNE_THRESHOLD"].detail == "p95_threshold adjusted to 240.0ms (was 200.0ms)"
    assert cycle._budget_map == {"planning.search": 1.5}
    assert records["INCREASE_BUDGET"].detail == "budget 1.00→1.50"
    assert cycle._load_shedder.signals == {"perception.ingest": 1}
    assert orchestrator.versions == {"memory.index": "2.4.1"}
    assert records["HOT_SWAP_MODULE"].detail == "orchestrator: SUCCESS — now at 2.4.1"
    assert server.applied == 4


async def test_a_kind_with_no_subsystem_listening_is_skipped_with_the_reason(
    broker: Broker, start_worker: WorkerStarter, serve: ServerStarter
) -> None:
    await serve(Subsystems(load=seed_subsystems(SimulatedCycle())[Subsystem.LOAD]))
    await start_worker()
    results = await broker.results_queue()

    await broker.publish_plan(plan_of("TUNE_THRESHOLD", "HOT_SWAP_MODULE", "REDUCE_LOAD"))
    records = sorted(await broker.records(results.name, expect=3), key=lambda r: r.action.action_id)

    assert [(r.status.value, r.detail) for r in records] == [
        ("SKIPPED", "no detector listening"),
        ("SKIPPED", "no orchestrator listening"),
        ("SUCCESS", "load-shed signal sent"),
    ]


async def test_a_server_whose_connection_is_closed_serves_again_within_two_seconds(
    broker: Broker, start_worker: WorkerStarter, serve: ServerStarter
) -> None:
    """Every second without its consumer is a second of commands SKIPPED: aio-pika's default
    of 5 s before reconnecting skipped 2,200 to 2,900 of the soak's 6,000 actions."""
    await serve(Subsystems(load=seed_subsystems(SimulatedCycle())[Subsystem.LOAD]))
    await start_worker()
    results = await broker.results_queue()
    queue = broker.names.command_queue("load")
    assert await asyncio.to_thread(consumers, queue) == 1

    out = await asyncio.to_thread(
        rabbitmqctl, "list_connections", "pid", "client_properties", "--no-table-headers"
    )
    wanted = f'{{"connection_name","subsystems {broker.names.namespace}"}}'
    (pid,) = [line.split("\t", 1)[0] for line in out.splitlines() if wanted in line]
    await asyncio.to_thread(rabbitmqctl, "close_connection", pid, "subsystem test")
    async with asyncio.timeout(2.0):
        while await asyncio.to_thread(consumers, queue) != 1:
            await asyncio.sleep(0.1)

    await broker.publish_plan(plan_of("REDUCE_LOAD"))
    (record,) = await broker.records(results.name, expect=1)
    assert (record.status.value, record.detail) == ("SUCCESS", "load-shed signal sent")


def consumers(queue: str) -> int:
    """The consumers of ``queue``; 0 while it does not exist (it goes with its server)."""
    out = rabbitmqctl("list_queues", "name", "consumers", "--no-table-headers")
    return sum(
        int(line.split("\t")[1]) for line in out.splitlines() if line.split("\t")[0] == queue
    )


class Hung:
    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Broken:
    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        raise RuntimeError("disk full")


async def test_silence_fails_after_the_timeout_and_an_error_reply_fails_with_its_reason(
    broker: Broker, start_worker: WorkerStarter, serve: ServerStarter
) -> None:
    await serve(Subsystems(detector=Hung(), load=Broken()))
    await start_worker(optimiser=OptimiserConfig(subsystem_timeout_s=1.0))
    results = await broker.results_queue()

    await broker.publish_plan(plan_of("TUNE_THRESHOLD", "REDUCE_LOAD", "NO_OP"))
    records = sorted(await broker.records(results.name, expect=3), key=lambda r: r.action.action_id)

    assert [(r.status.value, r.detail) for r in records] == [
        ("FAILED", "detector did not answer within 1s"),
        ("FAILED", "load failed: RuntimeError: disk full"),
        ("SKIPPED", "no-op"),
    ]


async def test_a_broken_reply_fails_the_action_with_the_reason(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    await broker.declare_topology()
    impostor = await broker.channel.declare_queue(
        broker.names.command_queue("detector"), auto_delete=True
    )
    await impostor.bind(broker.names.commands_exchange, "detector.*")

    async def answer_nonsense(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            await broker.channel.default_exchange.publish(
                aio_pika.Message(b'{"outcome": "MAYBE"}', correlation_id=message.correlation_id),
                routing_key=message.reply_to or "",
            )

    await impostor.consume(answer_nonsense)
    await start_worker(optimiser=OptimiserConfig(subsystem_timeout_s=5.0))
    results = await broker.results_queue()

    await broker.publish_plan(plan_of("TUNE_THRESHOLD"))
    [record] = await broker.records(results.name, expect=1)

    assert record.status is EnactmentStatus.FAILED
    assert record.detail.startswith("detector raised BrokenReply: broken reply: ")


async def test_the_same_command_twice_is_applied_once_and_answered_alike(
    broker: Broker, serve: ServerStarter
) -> None:
    cycle = SimulatedCycle()
    server = await serve(seed_subsystems(cycle))
    replies = await broker.channel.declare_queue(exclusive=True)
    now = datetime.now(UTC)
    command = SubsystemCommand(
        action_id="once-only",
        module="cognition.detector",
        arguments=TuneThreshold(delta=0.5, floor_ms=50, ceiling_ms=10_000),
        issued_at=now,
        deadline=now + timedelta(seconds=30),
    )
    exchange = await broker.channel.get_exchange(broker.names.commands_exchange)
    for attempt in range(2):
        await exchange.publish(
            aio_pika.Message(encode(command), reply_to=replies.name, correlation_id=f"c{attempt}"),
            routing_key="detector.tune",
        )

    answers = await broker.drain(replies.name, expect=2)
    decoded = [decode_reply(m.body) for m in answers]
    # The first reply again, saying it is a repeat: whoever sent it did nothing this time.
    assert decoded[1] == msgspec.structs.replace(decoded[0], repeat=True)
    assert not decoded[0].repeat
    assert decoded[0].outcome is ReplyOutcome.SUCCESS
    assert cycle._detector_config.latency_p95_threshold_ms == pytest.approx(300.0)  # once
    assert server.applied == 1


async def test_a_command_past_its_deadline_is_rejected_not_applied(
    broker: Broker, serve: ServerStarter
) -> None:
    cycle = SimulatedCycle()
    server = await serve(seed_subsystems(cycle))
    replies = await broker.channel.declare_queue(exclusive=True)
    past = datetime.now(UTC) - timedelta(seconds=5)
    command = SubsystemCommand(
        action_id="too-late", module="m", arguments=ShedLoad(), issued_at=past, deadline=past
    )
    exchange = await broker.channel.get_exchange(broker.names.commands_exchange)
    await exchange.publish(
        aio_pika.Message(encode(command), reply_to=replies.name), routing_key="load.shed"
    )
    [answer] = await broker.drain(replies.name, expect=1)
    reply = decode_reply(answer.body)
    assert reply.outcome is ReplyOutcome.REJECTED
    assert reply.detail.startswith("expired")
    assert server.applied == 0
    assert cycle._load_shedder.signals == {}


async def test_dry_run_never_publishes_a_command(
    broker: Broker, start_worker: WorkerStarter, serve: ServerStarter
) -> None:
    server = await serve(seed_subsystems(SimulatedCycle(), SimulatedOrchestrator(random.Random(0))))
    witness = await broker.channel.declare_queue(f"{broker.names.namespace}.witness")
    broker.extra_queues.append(witness.name)
    await witness.bind(broker.names.commands_exchange, "#")
    await start_worker(optimiser=OptimiserConfig(dry_run=True))
    results = await broker.results_queue()

    await broker.publish_plan(EXAMPLE_PLAN)
    await broker.publish_plan(no_op_plan("dry-2"))
    records = await broker.records(results.name, expect=8)

    assert {r.status for r in records} == {EnactmentStatus.SKIPPED}
    assert await broker.depth(witness.name) == 0
    assert server.applied == 0
    assert {routing_key(r).split(".")[1] for r in records} == {"SKIPPED"}


class Slow:
    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        await asyncio.sleep(1.5)
        return SubsystemResult(True, "shed, eventually")


async def test_a_change_made_after_the_timeout_is_logged_as_a_late_reply(
    broker: Broker,
    start_worker: WorkerStarter,
    serve: ServerStarter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await serve(Subsystems(load=Slow()))
    await start_worker(optimiser=OptimiserConfig(subsystem_timeout_s=1.0))
    results = await broker.results_queue()

    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="late"))
    [record] = await broker.records(results.name, expect=1)
    assert (record.status, record.detail) == (
        EnactmentStatus.FAILED,
        "load shedder did not answer within 1s",
    )
    async with asyncio.timeout(10):
        while not any("late reply for action late-0" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.05)
    [late] = [r for r in caplog.records if "late reply" in r.getMessage()]
    assert late.levelname == "WARNING"
    assert "SUCCESS shed, eventually" in late.getMessage()


async def test_an_action_the_subsystem_applied_before_is_recorded_alike_and_not_applied(
    broker: Broker,
    serve: ServerStarter,
    start_worker: WorkerStarter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Another worker dispatched it an instant before losing the plan, and its record never
    # reached the state log: this one gets the first answer, and nothing is applied again.
    caplog.set_level(logging.INFO, logger="worker.amqp.remote")
    cycle = SimulatedCycle()
    server = await serve(seed_subsystems(cycle))
    results = await broker.results_queue()
    first = await start_worker(optimiser=OptimiserConfig(cool_down_s=0))
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="twice"))
    [original] = await broker.records(results.name, expect=1)
    await first.shutdown()
    # A worker that does not know the record: one that remembers nothing.
    await start_worker(optimiser=OptimiserConfig(cool_down_s=0), dedup_window_s=0)
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="twice"))
    [again] = await broker.records(results.name, expect=1)

    # The one fact the first worker may never have published: the same outcome, not a replay.
    assert (original.replay, again.replay) == (False, False)
    assert (again.status, again.detail) == (original.status, original.detail)
    assert server.applied == 1
    assert any("had applied action" in r.getMessage() for r in caplog.records)
