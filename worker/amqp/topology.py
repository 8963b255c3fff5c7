"""Declaring the namespace's queues, exchanges and bindings (their names: ``schemas.names``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from schemas.names import DELIVERY_LIMIT, RETENTION_S, Names
from worker.amqp.errors import TopologyMismatch


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    type: aio_pika.ExchangeType


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BindingSpec:
    exchange: str
    queue: str
    routing_key: str = ""


@dataclass(frozen=True, slots=True)
class Layout:
    """The namespace's exchanges, queues and bindings, as data: declared by the worker and
    rendered into the broker definitions of ``deploy/`` from this one place."""

    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    bindings: tuple[BindingSpec, ...]
    #: Bindings of earlier versions that this one removes where it declares the namespace.
    retired: tuple[BindingSpec, ...] = ()


def layout(
    names: Names, *, delivery_limit: int = DELIVERY_LIMIT, retention_s: int = RETENTION_S
) -> Layout:
    """Plans, review items and parked plans live in quorum queues (replicated, always
    persistent). ``N.plans`` has one active consumer at a time (a standby replica takes over
    when it goes) and dead-letters a plan delivered more than ``delivery_limit`` times to
    ``N.plans.dead``. The stream ``N.results.log`` keeps every record for ``retention_s``, and
    ``N.checkpoints`` its checkpoints as long; the stream ``N.control`` keeps every pause and
    resume (they are few)."""
    fanout, topic = aio_pika.ExchangeType.FANOUT, aio_pika.ExchangeType.TOPIC
    quorum: dict[str, Any] = {"x-queue-type": "quorum"}
    plans_arguments = {
        **quorum,
        "x-single-active-consumer": True,
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": names.dead_exchange,
    }
    stream: dict[str, Any] = {"x-queue-type": "stream"}
    return Layout(
        exchanges=(
            ExchangeSpec(names.dead_exchange, fanout),
            ExchangeSpec(names.plans_exchange, fanout),
            ExchangeSpec(names.results_exchange, topic),
            ExchangeSpec(names.commands_exchange, topic),
            ExchangeSpec(names.review_exchange, fanout),
            ExchangeSpec(names.invalid_exchange, fanout),
            ExchangeSpec(names.control, fanout),
            ExchangeSpec(names.markers, fanout),
            ExchangeSpec(names.notes, fanout),
            ExchangeSpec(names.checkpoints, fanout),
        ),
        queues=(
            QueueSpec(names.dead_queue, quorum),
            QueueSpec(names.plans_queue, plans_arguments),
            QueueSpec(names.results_log, {**stream, "x-max-age": f"{retention_s}s"}),
            QueueSpec(names.checkpoints, {**stream, "x-max-age": f"{retention_s}s"}),
            QueueSpec(names.review_queue, quorum),
            QueueSpec(names.invalid_queue, quorum),
            QueueSpec(names.control, stream),
        ),
        bindings=(
            BindingSpec(names.dead_exchange, names.dead_queue),
            BindingSpec(names.plans_exchange, names.plans_queue),
            BindingSpec(names.markers, names.results_log),
            BindingSpec(names.markers, names.control),
            BindingSpec(names.notes, names.results_log),
            BindingSpec(names.checkpoints, names.checkpoints),
            BindingSpec(names.review_exchange, names.review_queue),
            BindingSpec(names.invalid_exchange, names.invalid_queue),
            BindingSpec(names.control, names.control),
        ),
        # Version 0.1 sent every record to the state log this way too, a message each; the
        # state log now holds one message per group of plans (``worker.amqp.state``).
        retired=(BindingSpec(names.results_exchange, names.results_log, "#"),),
    )


@dataclass(frozen=True, slots=True)
class Topology:
    """The declared objects the worker uses."""

    names: Names
    plans: AbstractQueue
    results: AbstractExchange


async def declare(
    channel: AbstractChannel,
    names: Names,
    *,
    delivery_limit: int = DELIVERY_LIMIT,
    retention_s: int = RETENTION_S,
    create: bool = True,
) -> Topology:
    """Declare (idempotently) every exchange, queue and binding of ``layout()``.

    With ``create=False`` only check that the exchanges and queues exist (a passive declare
    needs no permission), for a user that may not configure them.
    """
    if not create:
        return await _check(channel, names)
    try:
        return await _declare(channel, names, delivery_limit, retention_s)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyMismatch(
            f"the broker refused to declare namespace {names.namespace!r} as this version "
            f"does ({exc}). A queue from an older version (a classic queue where this one "
            f"wants a quorum queue, or other arguments) cannot be changed in place: move its "
            f"messages and delete it, or run with a new OPTIMISER_NAMESPACE"
        ) from None


async def _check(channel: AbstractChannel, names: Names) -> Topology:
    spec = layout(names)
    try:
        exchanges = {e.name: await channel.get_exchange(e.name) for e in spec.exchanges}
        queues = {q.name: await channel.get_queue(q.name) for q in spec.queues}
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        raise TopologyMismatch(
            f"namespace {names.namespace!r} is not fully declared ({exc}): load the definitions "
            f"(`self-optimiser definitions`) into the broker, or let the worker declare them "
            f"(declare_topology = true, with a user that may configure them)"
        ) from None
    return Topology(
        names=names, plans=queues[names.plans_queue], results=exchanges[names.results_exchange]
    )


async def _declare(
    channel: AbstractChannel, names: Names, delivery_limit: int, retention_s: int
) -> Topology:
    spec = layout(names, delivery_limit=delivery_limit, retention_s=retention_s)
    exchanges = {
        e.name: await channel.declare_exchange(e.name, e.type, durable=True) for e in spec.exchanges
    }
    queues = {
        q.name: await channel.declare_queue(q.name, durable=True, arguments=q.arguments)
        for q in spec.queues
    }
    for binding in spec.bindings:
        await queues[binding.queue].bind(exchanges[binding.exchange], binding.routing_key)
    for binding in spec.retired:
        await queues[binding.queue].unbind(exchanges[binding.exchange], binding.routing_key)
    return Topology(
        names=names,
        plans=queues[names.plans_queue],
        results=exchanges[names.results_exchange],
    )


@dataclass(frozen=True, slots=True)
class QueueState:
    messages: int
    consumers: int


async def queue_states(
    connection: AbstractConnection, queues: Mapping[str, str]
) -> dict[str, QueueState | None]:
    """Messages ready and consumers of each queue (by label), None for a missing one.

    Each passive declare runs on a channel of its own: a robust channel answers one for a queue
    it declared before from its cache (aio-pika 10.2), and a missing queue closes the channel.
    """
    states: dict[str, QueueState | None] = {}
    for label, queue in queues.items():
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            states[label] = None
            continue
        result = declared.declaration_result
        states[label] = QueueState(int(result.message_count or 0), int(result.consumer_count or 0))
        await channel.close()
    return states
