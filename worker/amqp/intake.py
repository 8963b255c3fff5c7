"""Reading a delivery of ``N.plans``: bytes in, a value out (as h11 reads HTTP), no I/O.

``read_plan`` gives the plan, or an ``Unreadable`` that says why not: bytes that are not UTF-8
in its properties, a body over the limit, a content type or encoding not read, a body that does
not decode or validate. ``parked`` is the message that carries such a delivery to
``N.plans.invalid``: its body intact, the reason in ``x-error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import aio_pika
import msgspec
from aiormq.abc import DeliveredMessage

from schemas import ParkReason, Plan, decode_plan
from schemas.codec import JSON, PLAN_CONTENT_TYPES
from worker.amqp import frames
from worker.amqp.outcome import Unreadable
from worker.amqp.publisher import PERSISTENT

#: Longest ``x-error`` header on a parked plan; msgspec's messages are far shorter.
MAX_ERROR_HEADER: Final = 1000
_ACCEPTED_ENCODINGS: Final = frozenset({"", "identity", "utf-8", "utf8"})


def read_plan(delivery: DeliveredMessage, limit: int) -> Plan | Unreadable:
    """The plan a delivery holds, or why it holds none this worker can read."""
    properties = delivery.header.properties
    where = frames.unreadable(delivery.routing_key, properties)
    if where:
        return Unreadable(
            ParkReason.UNREADABLE_PROPERTIES,
            f"bytes that are not UTF-8 in the {'; the '.join(where)}",
        )
    body = delivery.body
    if len(body) > limit:
        return Unreadable(ParkReason.TOO_LARGE, f"body of {len(body)} bytes exceeds {limit}")
    content_type = (properties.content_type or JSON).split(";")[0].strip().lower()
    if content_type not in PLAN_CONTENT_TYPES:
        expected = ", ".join(sorted(PLAN_CONTENT_TYPES))
        return Unreadable(
            ParkReason.CONTENT_TYPE, f"content type {content_type!r} is not one of {expected}"
        )
    encoding = (properties.content_encoding or "").strip().lower()
    if encoding not in _ACCEPTED_ENCODINGS:
        return Unreadable(ParkReason.CONTENT_ENCODING, f"content encoding {encoding!r} is not read")
    try:
        return decode_plan(body, content_type)
    except msgspec.DecodeError as exc:
        invalid = isinstance(exc, msgspec.ValidationError)
        return Unreadable(ParkReason.INVALID if invalid else ParkReason.MALFORMED, str(exc))
    except Exception as exc:  # RecursionError for deep nesting, and whatever else a body does
        return Unreadable(ParkReason.MALFORMED, f"{type(exc).__name__}: {exc}")


def parked(
    delivery: DeliveredMessage, unreadable: Unreadable, *, at: datetime, serial: int
) -> aio_pika.Message:
    """The message that moves an unreadable delivery to ``N.plans.invalid``, body intact,
    reason in ``x-error``, parked ``at``; ``serial`` makes its message id unique.

    Bytes that are not UTF-8 cannot be encoded again as they came: names and strings go
    as ``frames.shown`` writes them, the routing key and message id also as their bytes
    (``x-original-routing-key-bytes``, ``x-original-message-id-bytes``).
    """
    properties = delivery.header.properties
    headers = _encodable(properties.headers or {})
    routing_key, message_id = delivery.routing_key or "", properties.message_id or ""
    content_type, content_encoding = properties.content_type, properties.content_encoding
    if unreadable.kind is ParkReason.UNREADABLE_PROPERTIES:
        headers = frames.readable(headers)
        headers["x-original-routing-key-bytes"] = bytearray(frames.raw(routing_key))
        headers["x-original-message-id-bytes"] = bytearray(frames.raw(message_id))
        routing_key, message_id = frames.shown(routing_key), frames.shown(message_id)
        content_type = frames.readable(content_type)
        content_encoding = frames.readable(content_encoding)
    headers.update(
        {
            "x-error": unreadable.reason[:MAX_ERROR_HEADER],
            "x-error-kind": unreadable.kind.value,
            "x-original-exchange": delivery.exchange or "",
            "x-original-routing-key": routing_key,
            "x-original-message-id": message_id,
            "x-parked-at": at.isoformat(),
        }
    )
    return aio_pika.Message(
        delivery.body,
        headers=headers,
        content_type=content_type,
        content_encoding=content_encoding,
        delivery_mode=PERSISTENT,
        # A fresh id: returns are matched by message_id, and the planner's may repeat.
        message_id=f"parked-{delivery.delivery_tag}-{serial}",
        timestamp=properties.timestamp,
    )


def _encodable(headers: Mapping[str, object]) -> dict[str, Any]:
    """The headers as they came, in a form the client encodes again.

    A long string that is not UTF-8 arrives as ``bytes``, which pamqp will not encode: it goes
    back as a byte array (type ``x``, the same bytes). Lists and tables are walked. A 64-bit
    float (``d``, what Node.js's amqplib sends) goes back as pamqp encodes every float, 32-bit
    (``f``): the one change, written in docs/wire-contract.md.
    """
    return {key: _intact(value) for key, value in headers.items()}


def _intact(value: object) -> Any:
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {key: _intact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_intact(item) for item in value]
    return value
