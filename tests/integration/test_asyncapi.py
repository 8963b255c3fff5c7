"""What the worker publishes on a real broker is what the AsyncAPI document says of it."""

from __future__ import annotations

import json
import random

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from tests.support.asyncapi import MESSAGES
from tests.support.asyncapi import address as _address
from tests.support.asyncapi import validator as _validator
from tests.support.broker import Broker
from tests.support.factories import EXAMPLE_PLAN
from tests.support.workers import ServerStarter, WorkerStarter
from worker import seed_subsystems
from worker.amqp.remote import DIRECT_REPLY_TO
from worker.demo.simulated import SimulatedCycle, SimulatedOrchestrator


def _check(message: AbstractIncomingMessage, name: str, *, body: bool = True) -> None:
    """``message`` as the document's message ``name`` describes it."""
    described = MESSAGES[name]
    assert message.content_type == described.get("contentType", message.content_type)
    amqp = described.get("bindings", {}).get("amqp", {})
    if "messageType" in amqp:
        assert message.type == amqp["messageType"]
    if "headers" in described:
        _validator(described["headers"]).validate(dict(message.headers))
    if body:
        _validator(described["payload"]).validate(json.loads(message.body))


async def test_what_the_worker_publishes_is_what_the_document_says(
    broker: Broker, start_worker: WorkerStarter, serve: ServerStarter
) -> None:
    orchestrator = SimulatedOrchestrator(random.Random(0), failure_rate=0.0)
    await serve(seed_subsystems(SimulatedCycle(), orchestrator))
    await start_worker()  # no subsystems given: it sends commands
    results = await broker.results_queue()
    # A copy of every command, beside the subsystem server's queues.
    commands = await broker.channel.declare_queue(f"{broker.names.namespace}.test-commands")
    broker.extra_queues.append(commands.name)
    await commands.bind(broker.names.commands_exchange, "#")

    await broker.publish_plan(EXAMPLE_PLAN)
    await broker.publish_plan(b'{"plan_id": "p", "actions": [{"action_id": 7}]}')

    for record in await broker.drain(results.name, expect=6):
        _check(record, "record")
        assert record.routing_key == _address("results", json.loads(record.body))
        assert record.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    [review] = await broker.drain(broker.names.review_queue, expect=1)
    _check(review, "reviewItem")
    [parked] = await broker.drain(broker.names.invalid_queue, expect=1)
    _check(parked, "parkedPlan", body=False)
    sent = await broker.drain(commands.name, expect=4)
    assert len(sent) == 4
    for command in sent:
        _check(command, "command")
        subsystem = (command.routing_key or "").split(".")[0]
        payload = json.loads(command.body)
        assert command.routing_key == _address("commands", payload, subsystem=subsystem)
        # The broker gives each direct reply-to consumer a name of its own under it.
        assert (command.reply_to or "").startswith(f"{DIRECT_REPLY_TO}.")
