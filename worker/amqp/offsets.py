"""Reading a stream at a moment, not following it: its last offset, the offset of a time, the
messages at some offsets (a replay's originals, a checkpoint's last message)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime

from aio_pika.abc import AbstractExchange
from aio_pika.abc import AbstractRobustConnection as Connection
from aiormq.abc import DeliveredMessage

from worker.amqp.deliveries import settle
from worker.amqp.errors import StreamUnavailable
from worker.amqp.streams import ACK_EVERY, STREAM_PREFETCH, marker

log = logging.getLogger(__name__)


async def last_offset(connection: Connection, stream: str, *, quiet_s: float = 0.3) -> int:
    """The offset of the last message in ``stream`` now (-1 if it is empty).

    A consumer at offset "last" is handed the stream's last chunk at once; the highest offset
    in it is the end. Needs only the right to read the stream, not to publish a marker.
    """
    channel = await connection.channel()
    underlay = await channel.get_underlay_channel()
    seen: list[int] = []
    arrived = asyncio.Event()

    async def take(message: DeliveredMessage) -> None:
        offset = (message.header.properties.headers or {}).get("x-stream-offset")
        if isinstance(offset, int):
            seen.append(offset)
            arrived.set()

    try:
        await channel.set_qos(prefetch_count=STREAM_PREFETCH)
        await underlay.basic_consume(
            stream, take, arguments={"x-stream-offset": "last"}, no_ack=False
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await arrived.wait()
        while seen:  # the chunk arrives in a burst: wait until it is quiet
            count = len(seen)
            await asyncio.sleep(quiet_s)
            if len(seen) == count:
                break
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return max(seen, default=-1)


async def offset_at(
    connection: Connection,
    markers: AbstractExchange,
    stream: str,
    at: datetime,
    timeout_s: float,
) -> int:
    """The first offset of ``stream`` at or after time ``at`` (the start of the chunk that
    holds it, so perhaps a little before). A marker is published through ``markers`` first, so
    there is one even if nothing was written since ``at``."""
    channel = await connection.channel()
    first: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def take(message: DeliveredMessage) -> None:
        offset = (message.header.properties.headers or {}).get("x-stream-offset")
        if isinstance(offset, int) and not first.done():
            first.set_result(offset)

    try:
        underlay = await channel.get_underlay_channel()
        await channel.set_qos(prefetch_count=10)
        await underlay.basic_consume(stream, take, arguments={"x-stream-offset": at})
        async with asyncio.timeout(timeout_s):
            await markers.publish(marker(uuid.uuid4().hex), routing_key="")
            return await first
    except TimeoutError:
        raise StreamUnavailable(f"{stream} handed nothing over within {timeout_s:g}s") from None
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def read_offsets(
    connection: Connection, stream: str, offsets: Iterable[int], timeout_s: float
) -> dict[int, DeliveredMessage]:
    """The messages at ``offsets`` of ``stream``, each run of nearby offsets read by one
    consumer of its own from the run's first.

    Raises ``StreamUnavailable`` if the stream no longer holds one of them (retention took
    it) or they did not all come within ``timeout_s``.
    """
    wanted = sorted(set(offsets))
    found: dict[int, DeliveredMessage] = {}
    start = 0
    for end in range(1, len(wanted) + 1):
        if end == len(wanted) or wanted[end] - wanted[end - 1] > STREAM_PREFETCH:
            run = wanted[start:end]
            found.update(await _read_run(connection, stream, run, timeout_s))
            start = end
    return found


async def _read_run(
    connection: Connection, stream: str, run: list[int], timeout_s: float
) -> dict[int, DeliveredMessage]:
    channel = await connection.channel()
    wanted = set(run)
    found: dict[int, DeliveredMessage] = {}
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    unacked = 0

    async def take(message: DeliveredMessage) -> None:
        nonlocal unacked
        # A run may span more than the prefetch: acks keep the credit flowing.
        unacked += 1
        if unacked >= ACK_EVERY and message.delivery_tag is not None and not done.done():
            unacked = 0
            await settle(message, ack=True, multiple=True)
        at = (message.header.properties.headers or {}).get("x-stream-offset")
        if done.done() or not isinstance(at, int) or at < run[0]:
            return  # the chunk holding the first offset may start before it
        if at in wanted:
            found[at] = message
        missing = [offset for offset in run if offset <= at and offset not in found]
        if missing:
            error = f"{stream} no longer holds offset {missing[0]} (it went on at {at})"
            done.set_exception(StreamUnavailable(error))
        elif len(found) == len(run):
            done.set_result(None)

    try:
        underlay = await channel.get_underlay_channel()
        await channel.set_qos(prefetch_count=STREAM_PREFETCH)
        await underlay.basic_consume(stream, take, arguments={"x-stream-offset": run[0]})
        async with asyncio.timeout(timeout_s):
            await done
        return found
    except TimeoutError:
        raise StreamUnavailable(
            f"{stream} did not hand over offsets {run[0]}..{run[-1]} within {timeout_s:g}s"
        ) from None
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
