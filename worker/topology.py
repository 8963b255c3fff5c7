"""The worker's queues and exchanges in namespace ``N`` (the public wire names)."""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from pamqp.common import FieldTable

from worker.errors import OptimiserError


@dataclass(frozen=True, slots=True)
class Names:
    """Every wire name of one namespace."""

    namespace: str

    @property
    def plans_exchange(self) -> str:
        """Fanout exchange the planner publishes plans to (any routing key)."""
        return f"{self.namespace}.plans"

    @property
    def plans_queue(self) -> str:
        """Queue the worker consumes plans from, bound to the plans exchange."""
        return f"{self.namespace}.plans"

    @property
    def results_exchange(self) -> str:
        """Topic exchange of records, routing key ``<ACTION_KIND>.<STATUS>.<module_name>``."""
        return f"{self.namespace}.results"

    @property
    def commands_exchange(self) -> str:
        """Topic exchange of subsystem commands, routing key ``<subsystem>.<verb>``."""
        return f"{self.namespace}.commands"

    def command_queue(self, subsystem: str) -> str:
        """A subsystem server's queue; it exists only while the server runs."""
        return f"{self.namespace}.commands.{subsystem}"

    @property
    def queues(self) -> tuple[str, ...]:
        """Every durable queue of the namespace (command queues come and go with servers)."""
        return (
            self.plans_queue, self.review_queue, self.invalid_queue, self.results_log,
            self.dead_queue,
        )  # fmt: skip

    @property
    def exchanges(self) -> tuple[str, ...]:
        """Every exchange of the namespace."""
        return (
            self.plans_exchange, self.results_exchange, self.commands_exchange,
            self.dead_exchange,
        )  # fmt: skip

    @property
    def results_log(self) -> str:
        """Stream of every record (bound to the results exchange): the guardrail state."""
        return f"{self.namespace}.results.log"

    @property
    def dead_exchange(self) -> str:
        """Where ``N.plans`` dead-letters a plan past its delivery limit."""
        return f"{self.namespace}.plans.dead"

    @property
    def dead_queue(self) -> str:
        """Plans delivered too many times without an ack (they crashed a worker, say)."""
        return f"{self.namespace}.plans.dead"

    @property
    def review_queue(self) -> str:
        """Durable queue of FLAG_FOR_REVIEW actions, for operators."""
        return f"{self.namespace}.review"

    @property
    def invalid_queue(self) -> str:
        """Durable queue of plans that could not be read, with the reason in a header."""
        return f"{self.namespace}.plans.invalid"


@dataclass(frozen=True, slots=True)
class Topology:
    """The declared objects the worker uses."""

    names: Names
    plans: AbstractQueue
    results: AbstractExchange


class TopologyMismatch(OptimiserError):
    """A queue or exchange exists with other arguments than this version declares."""


#: Defaults shared by the worker's settings and anyone declaring the topology (tests, tools).
DELIVERY_LIMIT = 10
RETENTION_S = 86_400


async def declare(
    channel: AbstractChannel,
    names: Names,
    *,
    delivery_limit: int = DELIVERY_LIMIT,
    retention_s: int = RETENTION_S,
) -> Topology:
    """Declare (idempotently) every exchange and queue of the namespace.

    Plans, review items and parked plans live in quorum queues (replicated, always
    persistent). ``N.plans`` has one active consumer at a time (a standby replica takes over
    when it goes) and dead-letters a plan delivered more than ``delivery_limit`` times to
    ``N.plans.dead``. The stream ``N.results.log`` keeps every record for ``retention_s``.
    """
    try:
        return await _declare(channel, names, delivery_limit, retention_s)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyMismatch(
            f"the broker refused to declare namespace {names.namespace!r} as this version "
            f"does ({exc}). A queue from an older version (a classic queue where this one "
            f"wants a quorum queue, or other arguments) cannot be changed in place: move its "
            f"messages and delete it, or run with a new OPTIMISER_NAMESPACE"
        ) from None


async def _declare(
    channel: AbstractChannel, names: Names, delivery_limit: int, retention_s: int
) -> Topology:
    quorum: FieldTable = {"x-queue-type": "quorum"}
    dead = await channel.declare_exchange(
        names.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead_plans = await channel.declare_queue(names.dead_queue, durable=True, arguments=quorum)
    await dead_plans.bind(dead, routing_key="")
    plans_exchange = await channel.declare_exchange(
        names.plans_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    plans = await channel.declare_queue(
        names.plans_queue,
        durable=True,
        arguments={
            **quorum,
            "x-single-active-consumer": True,
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": names.dead_exchange,
        },
    )
    await plans.bind(plans_exchange, routing_key="")
    results = await channel.declare_exchange(
        names.results_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    log_stream = await channel.declare_queue(
        names.results_log,
        durable=True,
        arguments={"x-queue-type": "stream", "x-max-age": f"{retention_s}s"},
    )
    await log_stream.bind(results, routing_key="#")
    await channel.declare_exchange(
        names.commands_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await channel.declare_queue(names.review_queue, durable=True, arguments=quorum)
    await channel.declare_queue(names.invalid_queue, durable=True, arguments=quorum)
    return Topology(names=names, plans=plans, results=results)
