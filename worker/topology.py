"""The worker's queues and exchanges in namespace ``N`` (the public wire names)."""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue


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


async def declare(channel: AbstractChannel, names: Names) -> Topology:
    """Declare (idempotently) every exchange and queue of the namespace."""
    plans_exchange = await channel.declare_exchange(
        names.plans_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    plans = await channel.declare_queue(names.plans_queue, durable=True)
    await plans.bind(plans_exchange, routing_key="")
    results = await channel.declare_exchange(
        names.results_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await channel.declare_exchange(
        names.commands_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await channel.declare_queue(names.review_queue, durable=True)
    await channel.declare_queue(names.invalid_queue, durable=True)
    return Topology(names=names, plans=plans, results=results)
