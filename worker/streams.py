"""Following a RabbitMQ stream, and knowing when everything already in it has been read.

A stream consumer gets no "end of stream" signal. ``caught_up()`` publishes a marker to the
fanout exchange ``N.markers``, which is bound to every stream the worker follows, and waits until
each follower has read it back: everything published to those streams before the marker has
then been read.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from aio_pika.abc import AbstractRobustConnection as Connection

from worker.errors import OptimiserError

MARKER_TYPE: Final = "stream-marker"
#: Messages read from a stream before each acknowledgement round-trip.
STREAM_PREFETCH: Final = 1000


class StreamUnavailable(OptimiserError):
    """A stream could not be read to its end; what it holds is not known."""


class StreamFollower:
    """Reads one stream from ``offset`` on and hands each message (markers aside) to ``take``."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._channel: AbstractChannel | None = None
        self._markers: dict[str, asyncio.Future[None]] = {}

    async def follow(self, connection: Connection, *, offset: datetime | str) -> None:
        """Start consuming; ``offset`` is a time or one of "first", "last", "next"."""
        channel = await connection.channel()
        try:
            await channel.set_qos(prefetch_count=STREAM_PREFETCH)
            stream = await channel.declare_queue(self.stream, passive=True)
            await stream.consume(self._on_message, arguments={"x-stream-offset": offset})
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        self._channel = channel

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()

    def take(self, message: AbstractIncomingMessage) -> None:
        """One message of the stream, in order; markers never come here."""
        raise NotImplementedError

    def expect(self, marker: str) -> asyncio.Future[None]:
        seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers[marker] = seen
        return seen

    def forget(self, marker: str) -> None:
        self._markers.pop(marker, None)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await message.ack()  # streams need acks to keep the credit flowing
        if message.type == MARKER_TYPE:
            waiting = self._markers.get(message.message_id or "")
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
            return
        self.take(message)


async def caught_up(
    markers: AbstractExchange, followers: Sequence[StreamFollower], timeout_s: float
) -> None:
    """Return once every follower has read everything published to its stream before this call.

    Raises ``StreamUnavailable`` naming the streams that did not give the marker back in time.
    """
    marker = uuid.uuid4().hex
    waiting = {follower.stream: follower.expect(marker) for follower in followers}
    try:
        async with asyncio.timeout(timeout_s):
            await markers.publish(
                aio_pika.Message(b"", type=MARKER_TYPE, message_id=marker), routing_key=""
            )
            await asyncio.gather(*waiting.values())
    except TimeoutError:
        late = [stream for stream, seen in waiting.items() if not seen.done()]
        raise StreamUnavailable(
            f"{', '.join(late) or 'the streams'} did not give back a marker within {timeout_s:g}s"
        ) from None
    finally:
        for follower in followers:
            follower.forget(marker)
