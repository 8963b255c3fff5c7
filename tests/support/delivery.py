"""The plan handler without a broker: a fake delivery on a fake channel, a publisher that keeps
what it was given, and a fence that passes or fails when told to (as httpx's ``MockTransport``
stands in for the network). The real handler, step, optimiser, guards and record sink run on
them, so the delivery table (docs/worker-behaviour.md) is a unit test as well as an
integration test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiormq
from prometheus_client import CollectorRegistry

from schemas.names import Names
from worker.amqp.context import Context
from worker.amqp.errors import PublishFailed, StreamUnavailable
from worker.amqp.fence import Fence
from worker.amqp.metrics import WorkerMetrics
from worker.amqp.outbox import Outbox
from worker.amqp.plans import PlanHandler
from worker.amqp.publisher import Outgoing
from worker.amqp.records import RecordSink
from worker.amqp.state import StateFollower, records_messages
from worker.core.clock import SystemClock
from worker.core.config import OptimiserConfig
from worker.core.memory import FlagMemory, RecordMemory
from worker.core.metrics import OptimiserMetrics
from worker.core.optimiser import AsyncSelfOptimiser
from worker.core.planstep import PlanStep
from worker.core.ports import Subsystems
from worker.core.seed import QueueReviewSink
from worker.settings import WorkerSettings

_tags = itertools.count(1)


@dataclass
class FakeChannel:
    """What the handler asks of aiormq's channel: whether it is closed, ack and nack."""

    is_closed: bool = False
    refuse: bool = False  # acks and nacks fail, as on a channel that just went
    acked: list[int] = field(default_factory=list)
    nacked: list[int] = field(default_factory=list)

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        await self._settle()
        self.acked.append(tag)

    async def basic_nack(self, tag: int, requeue: bool = True) -> None:
        await self._settle()
        assert requeue, "the handler only ever nacks back to the queue"
        self.nacked.append(tag)

    async def _settle(self) -> None:
        await asyncio.sleep(0)
        if self.refuse or self.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("writer is None")


@dataclass
class _Header:
    properties: aiormq.spec.Basic.Properties


@dataclass
class FakeDelivery:
    """An aiormq ``DeliveredMessage`` as the handler reads it."""

    body: bytes
    channel: FakeChannel = field(default_factory=FakeChannel)
    routing_key: str = ""
    exchange: str = "t.plans"
    redelivered: bool = False
    delivery_tag: int = field(default_factory=lambda: next(_tags))
    header: _Header = field(
        default_factory=lambda: _Header(
            aiormq.spec.Basic.Properties(content_type="application/json")
        )
    )

    @classmethod
    def of(cls, plan: dict[str, Any], **properties: Any) -> FakeDelivery:
        delivery = cls(json.dumps(plan).encode())
        if properties:
            delivery.header = _Header(aiormq.spec.Basic.Properties(**properties))
        return delivery


@dataclass
class FakePublisher:
    """Keeps every message; ``fail`` publishes in a row are not confirmed, and exchanges in
    ``unbound`` return what is sent there."""

    fail: int = 0
    unbound: set[str] = field(default_factory=set)
    sent: list[Outgoing] = field(default_factory=list)

    async def publish_bodies(self, messages: Sequence[Outgoing]) -> list[bool | PublishFailed]:
        await asyncio.sleep(0)
        if self.fail > 0:
            self.fail -= 1
            return [PublishFailed("nacked (fake)") for _ in messages]
        self.sent.extend(messages)
        return [m.exchange not in self.unbound for m in messages]

    async def publish_body(
        self, exchange: str, routing_key: str, body: bytes, properties: Any
    ) -> bool:
        (outcome,) = await self.publish_bodies([Outgoing(exchange, routing_key, body, properties)])
        if isinstance(outcome, PublishFailed):
            raise outcome
        return outcome

    def to(self, exchange: str) -> list[Outgoing]:
        return [m for m in self.sent if m.exchange == exchange]


@dataclass
class Harness:
    """A plan handler on fakes; ``fence_fails`` fences in a row fail (the streams unread)."""

    subsystems: Subsystems = field(default_factory=Subsystems)
    config: OptimiserConfig = field(default_factory=OptimiserConfig)
    max_plan_bytes: int = 1_048_576
    fence_fails: int = 0
    stopping: bool = False
    names: Names = field(default_factory=lambda: Names("t"))
    publisher: FakePublisher = field(default_factory=FakePublisher)
    review: QueueReviewSink = field(default_factory=QueueReviewSink)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        clock = SystemClock()
        self.metrics = WorkerMetrics(self.registry)
        self.optimiser = AsyncSelfOptimiser(
            subsystems=self.subsystems,
            review=self.review,
            config=self.config,
            clock=clock,
            metrics=OptimiserMetrics(self.registry),
        )
        self.memory = RecordMemory(window_s=3600, limit=1000, clock=clock)
        self.state = StateFollower(
            self.memory,
            self.optimiser,
            self.names,
            clock=clock,
            flags=FlagMemory(window_s=3600, limit=1000, clock=clock),
        )
        outbox = Outbox(
            self.publisher,  # type: ignore[arg-type]
            state=lambda bodies: records_messages(self.names.notes, bodies),
            most=8,
            wait_s=0.002,
        )
        context = Context(
            settings=WorkerSettings(
                namespace=self.names.namespace,
                max_plan_bytes=self.max_plan_bytes,
                takeover_wait_s=0.0,
                fence_timeout_s=0.1,
                fence_reuse_s=0.0,
            ),
            names=self.names,
            clock=clock,
            metrics=self.metrics,
            optimiser_metrics=OptimiserMetrics(CollectorRegistry()),
            stopping=lambda: self.stopping,
            move_node=self._move_node,
        )
        records = RecordSink(context, outbox, self.state)
        self.fence = Fence(context, catch_up=self._catch_up, followers=(), records=records)
        step = PlanStep(self.optimiser, self.memory, clock=clock)
        self.handler = PlanHandler(context, step, self.fence, records)

    async def _catch_up(self) -> None:
        await asyncio.sleep(0)
        if self.fence_fails > 0:
            self.fence_fails -= 1
            raise StreamUnavailable("the state streams did not answer (fake)")

    async def _move_node(self) -> None:
        await asyncio.sleep(0)

    def consumed(self, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "asi_optimiser_plans_consumed_total", {"outcome": outcome}
        )
        return value or 0.0

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(m.body) for m in self.publisher.to(self.names.results_exchange)]
