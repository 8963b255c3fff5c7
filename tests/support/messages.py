"""Messages as the worker's publisher takes them (``worker.amqp.publisher.Outgoing``)."""

from __future__ import annotations

import aiormq

from worker.amqp.publisher import Outgoing


def message(exchange: str, routing_key: str, body: bytes, message_id: str | None) -> Outgoing:
    properties = aiormq.spec.Basic.Properties(message_id=message_id, delivery_mode=2)
    return Outgoing(exchange, routing_key, body, properties)
