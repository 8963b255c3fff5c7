"""The worker's parts, built once its two connections are up: channels, the namespace declared,
the publisher, the optimiser on its subsystems and review queue, the state followers, and the
plan handler with its fence, record sink and outbox."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from schemas import EnactmentRecord
from schemas.names import Names
from worker.amqp.context import Context
from worker.amqp.control import ControlFollower
from worker.amqp.fence import Fence
from worker.amqp.offsets import read_offsets
from worker.amqp.outbox import Outbox
from worker.amqp.plans import PlanHandler
from worker.amqp.publisher import Publisher
from worker.amqp.records import RecordSink
from worker.amqp.remote import RemoteSubsystems
from worker.amqp.review import AmqpReviewSink
from worker.amqp.state import StateFollower, records_in, records_messages
from worker.amqp.streams import caught_up
from worker.amqp.topology import declare
from worker.core.clock import Clock
from worker.core.memory import FlagMemory, RecordMemory
from worker.core.optimiser import AsyncSelfOptimiser
from worker.core.planstep import PlanStep
from worker.core.ports import Subsystems
from worker.settings import WorkerSettings

#: The longest the records of a plan wait for those of the plans enacted after it, to go out
#: in one write with them (a plan that waits for a subsystem holds the others up no longer).
GROUP_WAIT_S: Final = 0.002


@dataclass(frozen=True, slots=True)
class Parts:
    """What the lifecycle starts, watches and stops."""

    context: Context
    consume_channel: AbstractRobustChannel
    publish_channel: AbstractChannel
    publisher: Publisher
    markers: AbstractExchange
    checkpoints: AbstractExchange
    state: StateFollower
    control: ControlFollower
    handler: PlanHandler


async def build(
    context: Context,
    consume_connection: AbstractRobustConnection,
    publish_connection: AbstractRobustConnection,
    subsystems: Subsystems | None,
) -> Parts:
    """Every part, the namespace declared. ``subsystems`` None: the subsystem servers, over
    AMQP. Publishers and consumers are on separate connections: publish flow control (a
    blocked connection) must not stall the acks of plans already enacted."""
    settings, names, clock = context.settings, context.names, context.clock
    consume_channel = await consume_connection.channel()
    assert isinstance(consume_channel, AbstractRobustChannel)
    await consume_channel.set_qos(prefetch_count=settings.prefetch)
    await declare(
        consume_channel,
        names,
        delivery_limit=settings.delivery_limit,
        retention_s=settings.state_retention_s,
        create=settings.declare_topology,
    )
    publish_channel = await publish_connection.channel(
        publisher_confirms=True, on_return_raises=False
    )
    publisher = Publisher(publish_channel, timeout_s=settings.publish_timeout_s)
    markers = await publish_channel.get_exchange(names.markers)
    flags = FlagMemory(window_s=settings.dedup_window_s, limit=settings.remember_limit, clock=clock)
    optimiser = AsyncSelfOptimiser(
        subsystems=subsystems or await _remote(context, publish_connection),
        review=AmqpReviewSink(
            publisher,
            await publish_channel.get_exchange(names.review_exchange),
            notes=await publish_channel.get_exchange(names.notes),
            flags=flags,
            clock=clock,
            patience_s=settings.outage_wait_s,
            failed=context.metrics.publish_failures.labels("review").inc,
        ),
        config=settings.optimiser,
        clock=clock,
        metrics=context.optimiser_metrics,
    )
    memory = _memory(settings, names, clock, publish_connection)
    state = StateFollower(memory, optimiser, names, clock=clock, flags=flags)
    control = ControlFollower(names, optimiser)
    return Parts(
        context=context,
        consume_channel=consume_channel,
        publish_channel=publish_channel,
        publisher=publisher,
        markers=markers,
        checkpoints=await publish_channel.get_exchange(names.checkpoints),
        state=state,
        control=control,
        handler=_handler(
            context,
            optimiser=optimiser,
            memory=memory,
            publisher=publisher,
            markers=markers,
            state=state,
            control=control,
        ),
    )


def _handler(
    context: Context,
    *,
    optimiser: AsyncSelfOptimiser,
    memory: RecordMemory,
    publisher: Publisher,
    markers: AbstractExchange,
    state: StateFollower,
    control: ControlFollower,
) -> PlanHandler:
    settings, names = context.settings, context.names
    followers = (state, control)

    async def catch_up() -> None:
        await caught_up(markers, followers, settings.fence_timeout_s)

    # A quarter of the prefetch a group at most: the plans of the next groups keep coming
    # while one waits for its confirms.
    outbox = Outbox(
        publisher,
        state=functools.partial(records_messages, names.notes),
        most=settings.prefetch // 4,
        wait_s=GROUP_WAIT_S,
    )
    records = RecordSink(context, outbox, state)
    fence = Fence(context, catch_up=catch_up, followers=followers, records=records)
    step = PlanStep(optimiser, memory, clock=context.clock, metrics=context.optimiser_metrics)
    return PlanHandler(context, step, fence, records)


async def _remote(context: Context, connection: AbstractRobustConnection) -> Subsystems:
    remote = await RemoteSubsystems.open(
        connection,
        context.names,
        timeout_s=context.settings.optimiser.subsystem_timeout_s,
    )
    return remote.subsystems()


def _memory(
    settings: WorkerSettings, names: Names, clock: Clock, connection: AbstractRobustConnection
) -> RecordMemory:
    """The record memory, reading originals back from the state log on ``connection``."""

    async def fetch(offsets: Sequence[int]) -> dict[int, list[EnactmentRecord]]:
        read = await read_offsets(connection, names.results_log, offsets, settings.fence_timeout_s)
        return {offset: records_in(message) for offset, message in read.items()}

    return RecordMemory(
        window_s=settings.dedup_window_s, limit=settings.remember_limit, clock=clock, fetch=fetch
    )
