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
from aio_pika.abc import AbstractExchange, AbstractRobustChannel
from aio_pika.abc import AbstractRobustConnection as Connection
from aiormq.abc import DeliveredMessage

from worker.errors import OptimiserError

MARKER_TYPE: Final = "stream-marker"
#: Messages read from a stream before each acknowledgement round-trip.
STREAM_PREFETCH: Final = 1000
#: Acknowledged together (well below the prefetch, so that deliveries never stall).
ACK_EVERY: Final = 200


class StreamUnavailable(OptimiserError):
    """A stream could not be read to its end; what it holds is not known."""


class StreamFollower:
    """Reads one stream from ``offset`` on and hands each message (markers aside) to ``take``.

    It consumes on aiormq's channel under aio-pika's robust one: an ``IncomingMessage`` and a
    second task per record cost the worker a tenth of its time, reading back its own records.
    After a reconnect it consumes again from the message after the last one it read.
    """

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._channel: AbstractRobustChannel | None = None
        self._markers: dict[str, asyncio.Future[None]] = {}
        self._unacked = 0
        self._offset: datetime | str | int = "next"

    async def follow(self, connection: Connection, *, offset: datetime | str) -> None:
        """Start consuming; ``offset`` is a time or one of "first", "last", "next"."""
        channel = await connection.channel()
        assert isinstance(channel, AbstractRobustChannel)
        self._offset = offset
        try:
            await channel.set_qos(prefetch_count=STREAM_PREFETCH)
            await channel.declare_queue(self.stream, passive=True)
            await self._consume(channel)
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        channel.reopen_callbacks.add(self._reconsume)
        self._channel = channel

    async def _reconsume(self, channel: AbstractRobustChannel | None) -> None:
        if channel is not None:
            await self._consume(channel)

    async def _consume(self, channel: AbstractRobustChannel) -> None:
        self._unacked = 0  # delivery tags start again on a new channel
        underlay = await channel.get_underlay_channel()
        await underlay.basic_consume(
            self.stream, self._on_message, arguments={"x-stream-offset": self._offset}
        )

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.reopen_callbacks.discard(self._reconsume)
            with contextlib.suppress(Exception):
                await channel.close()

    def take(self, message: DeliveredMessage) -> None:
        """One message of the stream, in order; markers never come here."""
        raise NotImplementedError

    def expect(self, marker: str) -> asyncio.Future[None]:
        seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers[marker] = seen
        return seen

    def forget(self, marker: str) -> None:
        self._markers.pop(marker, None)

    async def _on_message(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        offset = (properties.headers or {}).get("x-stream-offset")
        if isinstance(offset, int):
            self._offset = offset + 1
        # Streams need acks to keep the credit flowing; one for many saves a frame per message.
        self._unacked += 1
        marker = properties.message_type == MARKER_TYPE
        if (self._unacked >= ACK_EVERY or marker) and message.delivery_tag is not None:
            self._unacked = 0
            await message.channel.basic_ack(message.delivery_tag, multiple=True)
        if marker:
            waiting = self._markers.get(properties.message_id or "")
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
