"""Commands for the people around the worker: publish a plan, follow the records."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import aio_pika
import aiormq
import msgspec
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import DeliveredMessage

from schemas import EnactmentRecord, Plan, decode_plan, decode_record, encode
from schemas.codec import JSON
from worker.config import WorkerSettings
from worker.connection import connect
from worker.errors import OptimiserError
from worker.publisher import PERSISTENT
from worker.topology import Names

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


def format_record(record: EnactmentRecord) -> str:
    """One aligned line for a record."""
    action = record.action
    when = record.attempted_at.strftime("%H:%M:%S")
    return (
        f"{when}  {record.status.value:<12} {action.action_kind.value:<16} "
        f"{action.module_name:<20} {record.detail}"
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
    connection = await connect(settings, "publish-cli")
    try:
        channel = await connection.channel(publisher_confirms=True)
        records = None
        if wait_s is not None:
            # Bound before publishing, so no record can slip past.
            records = await channel.declare_queue(exclusive=True, auto_delete=True)
            await records.bind(names.results_exchange, "#")
        try:
            exchange = await channel.get_exchange(names.plans_exchange)
            returned = await exchange.publish(
                aio_pika.Message(
                    body, content_type=JSON, delivery_mode=PERSISTENT, message_id=plan.plan_id
                ),
                routing_key="",
                mandatory=True,
                timeout=settings.publish_timeout_s,
            )
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise OptimiserError(
                f"exchange {names.plans_exchange!r} does not exist: start `self-optimiser run` "
                f"once (namespace {names.namespace!r}) so that it declares it"
            ) from None
        except (aiormq.exceptions.DeliveryError, TimeoutError) as exc:
            raise OptimiserError(
                f"the broker did not confirm the plan ({type(exc).__name__}); it may or may not "
                f"be queued: check with `self-optimiser tail` before publishing it again"
            ) from None
        if isinstance(returned, DeliveredMessage):
            raise OptimiserError(
                f"no queue is bound to exchange {names.plans_exchange!r}: start "
                f"`self-optimiser run` once so that it declares its queues"
            )
        out(
            f"published plan {plan.plan_id} ({len(plan.actions)} actions) to {names.plans_exchange}"
        )
        if records is None:
            return True
        return await _await_records(records, plan, names, wait_s or 0.0, out)
    finally:
        await connection.close()


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
                record = _record_of(message)
                if record is None or record.plan_id != plan.plan_id:
                    continue
                seen.add(record.action.action_id)
                out(format_record(record))
                if len(seen) == expected:
                    return True
    except TimeoutError:
        out(
            f"only {len(seen)} of {expected} records within {wait_s:g}s: is a worker "
            f"(`self-optimiser run`) consuming {names.plans_queue}?"
        )
    return False


def _record_of(message: AbstractIncomingMessage) -> EnactmentRecord | None:
    try:
        return decode_record(message.body)
    except msgspec.DecodeError:
        log.warning("a message on the results exchange is not a record: %r", message.body[:200])
        return None


async def tail_records(
    settings: WorkerSettings,
    *,
    kind: str | None,
    status: str | None,
    module: str | None,
    as_json: bool,
    out: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
) -> None:
    """Follow ``N.results`` through a temporary queue bound to the matching routing keys."""
    names = Names(settings.namespace)
    pattern = f"{kind or '*'}.{status or '*'}.{module or '#'}"
    connection = await connect(settings, "tail-cli")
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(names.results_exchange, pattern)
        log.info("following %s with pattern %r", names.results_exchange, pattern)

        stop = stop or asyncio.Event()

        async def show(message: AbstractIncomingMessage) -> None:
            async with message.process():
                record = _record_of(message)
                if record is None:
                    return
                try:
                    out(encode(record).decode() if as_json else format_record(record))
                except BrokenPipeError:  # `tail | head` has read enough
                    stop.set()

        await queue.consume(show)
        await stop.wait()
    finally:
        await connection.close()
