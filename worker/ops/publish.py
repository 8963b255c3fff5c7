"""Commands for the people around the worker: publish a plan, follow the records, see the
state of a namespace, work the review queue."""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final

import aio_pika
import msgspec
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from schemas import EnactmentRecord, Plan, decode_plan, decode_record
from schemas.codec import JSON
from schemas.names import Names
from worker.amqp.connection import one_shot
from worker.amqp.errors import BrokerLost
from worker.amqp.publisher import PERSISTENT, bind_or_explain, publish_once
from worker.core.errors import OptimiserError
from worker.ops.format import MODULE_WIDTH, format_record, plural, record_header
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class PlanRejected(OptimiserError):
    """The plan file does not hold a valid plan."""


def read_plan(source: str) -> tuple[Plan, bytes]:
    """Read and validate a plan from a file, or stdin for ``-``."""
    try:
        body = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise PlanRejected(f"cannot read {source}: {exc.strerror}") from None
    try:
        return decode_plan(body), body
    except msgspec.DecodeError as exc:
        raise PlanRejected(f"{source} is not a valid plan: {exc}") from None


async def follow_queue(channel: AbstractChannel, names: Names) -> AbstractQueue:
    """A temporary queue ``N.tail.<random>`` (the operator role may declare those)."""
    return await channel.declare_queue(
        names.tail_queue(uuid.uuid4().hex[:12]), exclusive=True, auto_delete=True
    )


_UNSURE: Final = (
    "the plan may or may not be queued: check with `self-optimiser tail` before publishing it again"
)


async def publish_plan(
    settings: WorkerSettings,
    plan: Plan,
    body: bytes,
    *,
    wait_s: float | None,
    out: Callable[[str], None] = print,
) -> bool:
    """Publish ``plan``; with ``wait_s``, print its records as they land. True if all came."""
    names = Names(settings.namespace)
    published = False
    try:
        async with one_shot(settings, "publish-cli") as connection:
            channel = await connection.channel(publisher_confirms=True)
            records = None
            if wait_s is not None:
                # Bound before publishing, so no record can slip past.
                records = await follow_queue(channel, names)
                await bind_or_explain(records, names.results_exchange, "#", names.namespace)
            await publish_once(
                channel,
                names.plans_exchange,
                aio_pika.Message(
                    body, content_type=JSON, delivery_mode=PERSISTENT, message_id=plan.plan_id
                ),
                namespace=names.namespace,
                timeout_s=settings.publish_timeout_s,
                if_unconfirmed=_UNSURE,
            )
            published = True
            out(
                f"published plan {plan.plan_id} ({plural(len(plan.actions), 'action')}) to "
                f"{names.plans_exchange}"
            )
            if records is None:
                return True
            out(
                f"waiting up to {wait_s:g}s for {plural(len(plan.actions), 'record')} "
                f"(Ctrl-C stops waiting)"
            )
            out(record_header(_width(plan)))
            return await _await_records(records, plan, names, wait_s or 0.0, out)
    except BrokerLost as lost:
        raise BrokerLost(
            f"{lost}: "
            + (
                f"plan {plan.plan_id} was published (the broker confirmed it); `self-optimiser "
                f"tail` shows its records"
                if published
                else _UNSURE
            )
        ) from None


async def _await_records(
    queue: aio_pika.abc.AbstractQueue,
    plan: Plan,
    names: Names,
    wait_s: float,
    out: Callable[[str], None],
) -> bool:
    expected = len(plan.actions)
    seen: set[str] = set()
    try:
        async with asyncio.timeout(wait_s), queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                record = record_of(message)
                if record is None or record.plan_id != plan.plan_id:
                    continue
                seen.add(record.action.action_id)
                out(format_record(record, _width(plan)))
                if len(seen) == expected:
                    return True
    except TimeoutError:
        out(
            f"only {len(seen)} of {expected} records within {wait_s:g}s: is a worker "
            f"(`self-optimiser run`) consuming {names.plans_queue}?"
        )
    return False


def _width(plan: Plan) -> int:
    return max(MODULE_WIDTH, *(len(a.module_name) for a in plan.actions))


def record_of(message: AbstractIncomingMessage) -> EnactmentRecord | None:
    try:
        return decode_record(message.body)
    except msgspec.DecodeError:
        log.warning("a message on the results exchange is not a record: %r", message.body[:200])
        return None
