"""Following a RabbitMQ stream, and knowing when everything already in it has been read.

A stream consumer gets no "end of stream" signal. ``caught_up()`` publishes a marker to the
fanout exchange ``N.markers``, which is bound to every stream the worker follows, and waits until
each follower has read it back: everything published to those streams before the marker has
then been read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Final

import aio_pika
import aiormq
from aio_pika.abc import AbstractExchange, AbstractRobustChannel
from aio_pika.abc import AbstractRobustConnection as Connection
from aiormq.abc import DeliveredMessage

from worker.amqp import frames
from worker.amqp.deliveries import settle
from worker.amqp.errors import BROKER_ERRORS, StreamUnavailable
from worker.core.errors import cancelled_here

log = logging.getLogger(__name__)

MARKER_TYPE: Final = "stream-marker"
#: Messages read from a stream before each acknowledgement round-trip.
STREAM_PREFETCH: Final = 1000
#: Acknowledged together (well below the prefetch, so that deliveries never stall).
ACK_EVERY: Final = 200
#: How often a long catch-up (a restore) reports its progress.
PROGRESS_EVERY_S: Final = 5.0


class StreamFollower:
    """Reads one stream from ``offset`` on and hands each message (markers aside) to ``take``.

    It consumes on aiormq's channel under aio-pika's robust one: an ``IncomingMessage`` and a
    second task per record cost the worker a tenth of its time, reading back its own records.
    After a reconnect it consumes again from the message after the last one it read.
    """

    #: Consume again from the first message after a reconnect or a cancel, instead of from
    #: the one after the last read: for a short stream whose reader drops what it has seen,
    #: and which must also survive the stream being declared anew (its offsets start over).
    read_again_from_first: bool = False

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._channel: AbstractRobustChannel | None = None
        self._markers: dict[str, asyncio.Future[None]] = {}
        self._unacked = 0
        self._offset: datetime | str | int = "next"
        self._tag: str | None = None
        self._resuming: asyncio.Task[None] | None = None
        self._connection: Connection | None = None
        self.read = 0  # messages read, markers included: progress, for a long restore
        # The first and the last message read (markers included), and the last one's id.
        self.first_offset: int | None = None
        self.last_offset: int | None = None
        self.last_id = ""

    async def follow(self, connection: Connection, *, offset: datetime | str | int) -> None:
        """Start consuming; ``offset`` is a time, an offset, or one of "first", "last", "next"."""
        channel = await connection.channel()
        assert isinstance(channel, AbstractRobustChannel)
        self._offset = offset
        try:
            await channel.set_qos(prefetch_count=STREAM_PREFETCH)
            await self._check_exists(connection)
            await self._consume(channel)
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        channel.reopen_callbacks.add(self._reconsume)
        self._channel = channel
        self._connection = connection

    async def _reconsume(self, channel: AbstractRobustChannel | None) -> None:
        # After a reconnect: consume again (checked first, in a task of its own, so that a
        # stream that is gone cannot fail the channel's restore).
        if channel is not None:
            self._start_resuming()

    async def _check_exists(self, connection: Connection) -> None:
        """Raise ``ChannelNotFoundEntity`` if the stream is missing. Asked on a channel of its
        own: a missing queue closes the channel it is asked on, and the robust one would then
        declare it again at every restore."""
        probe = await connection.channel()
        try:
            await probe.declare_queue(self.stream, passive=True)
        finally:
            with contextlib.suppress(Exception):
                await probe.close()

    async def _consume(self, channel: AbstractRobustChannel) -> None:
        self._unacked = 0  # delivery tags start again on a new channel
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(self._on_cancel)
        offset = "first" if self.read_again_from_first else self._offset
        consuming = await underlay.basic_consume(
            self.stream, self._on_message, arguments={"x-stream-offset": offset}
        )
        self._tag = consuming.consumer_tag

    async def _on_cancel(self, frame: aiormq.spec.Basic.Cancel) -> None:
        """The broker ended our consumer (the stream deleted, or its replica gone in a
        cluster): consume again from where we were, until it works. Silence here would leave
        a worker blind to a pause."""
        if frame.consumer_tag == self._tag and self._channel is not None:
            log.warning("the broker cancelled the consumer of %s; consuming it again", self.stream)
            self._start_resuming()

    async def reconsume(self) -> None:
        """Consume again from the message after the last one read, on a channel of its own.

        For a consumer the broker left stalled without cancelling it: seen on a three-node
        cluster when the stream's leader stopped and came back, after which the replica's
        consumer delivered nothing more, and sometimes went on delivering nothing when
        consumed again on the same channel. A new channel gets a new reader on the broker.
        Reading a message twice is harmless (``take`` knows what it has seen).
        """
        old, connection = self._channel, self._connection
        if old is None or connection is None:
            return
        channel = await connection.channel()
        assert isinstance(channel, AbstractRobustChannel)
        try:
            await channel.set_qos(prefetch_count=STREAM_PREFETCH)
            await self._consume(channel)
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        channel.reopen_callbacks.add(self._reconsume)
        self._channel = channel
        old.reopen_callbacks.discard(self._reconsume)
        with contextlib.suppress(Exception):
            await old.close()

    @property
    def healthy(self) -> bool:
        """Whether the stream is being read now: consuming, on an open channel, and not
        waiting to consume again after the broker cancelled the consumer."""
        channel = self._channel
        if channel is None or channel.is_closed:
            return False
        return self._resuming is None or self._resuming.done()

    def _start_resuming(self) -> None:
        if self._resuming is None or self._resuming.done():
            self._resuming = asyncio.create_task(self._consume_again())

    async def _consume_again(self) -> None:
        async def consume() -> None:
            channel, connection = self._channel, self._connection
            assert channel is not None
            assert connection is not None
            await self._check_exists(connection)
            await self._consume(channel)

        await consume_again(
            self.stream, consume, lambda: self._channel is not None and self._connection is not None
        )

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if self._resuming is not None:
            self._resuming.cancel()
        if channel is not None:
            channel.reopen_callbacks.discard(self._reconsume)
            with contextlib.suppress(Exception):
                await channel.close()

    def take(self, message: DeliveredMessage) -> None:
        """One message of the stream, in order; markers never come here."""
        raise NotImplementedError

    async def read_through(self, offset: int, timeout_s: float, *, idle_s: float = 1.0) -> None:
        """Return once the message at ``offset`` has been read (for readers that may not
        publish a marker), or when nothing at all came within ``idle_s``: a reader that
        started from a time after the last message is handed nothing. Raise
        ``StreamUnavailable`` after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(timeout_s):
                while not (isinstance(self._offset, int) and self._offset > offset):
                    if not isinstance(self._offset, int) and loop.time() - started > idle_s:
                        return
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise StreamUnavailable(
                f"{self.stream} was not read up to offset {offset} within {timeout_s:g}s"
            ) from None

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
            if self.first_offset is None:
                self.first_offset = offset
            self.last_offset, self.last_id = offset, properties.message_id or ""
        self.read += 1
        # Streams need acks to keep the credit flowing; one for many saves a frame per message.
        self._unacked += 1
        is_marker = properties.message_type == MARKER_TYPE
        if (self._unacked >= ACK_EVERY or is_marker) and message.delivery_tag is not None:
            self._unacked = 0
            await settle(message, ack=True, multiple=True)
        if is_marker:
            waiting = self._markers.get(properties.message_id or "")
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
            return
        where = frames.unreadable(message.routing_key, properties)
        if where:  # nothing of ours: a reader after this one must not stall on it either
            log.warning(
                "a message in %s at offset %s has bytes that are not UTF-8 in the %s: not one "
                "of ours, skipped", self.stream, offset, "; the ".join(where),
            )  # fmt: skip
            return
        self.take(message)


def explain(exc: BaseException) -> str:
    """Why a stream could not be followed, in words that say what to do where the broker's do
    not: a worker connected to a node that holds no replica of the stream cannot read it."""
    why = str(exc)
    if "does not have a replica on the local node" in why:
        why += (
            "; connect this worker to a node that holds a replica (`rabbitmqctl "
            "list_queues name members`), or add one there (`rabbitmq-streams add_replica`)"
        )
    return why


async def consume_again(
    queue: str, consume: Callable[[], Awaitable[None]], going_on: Callable[[], bool]
) -> None:
    """``consume`` until the broker lets it (or ``going_on`` says to stop), backing off from
    0.5 s to 10 s and saying why each time."""
    delay = 0.5
    while going_on():
        try:
            await consume()
            log.info("consuming %s again", queue)
            return
        except BROKER_ERRORS as exc:
            log.warning(
                "cannot consume %s yet (%s); retrying in %.1fs",
                queue, exc or type(exc).__name__, delay,
            )  # fmt: skip
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def marker(marker_id: str) -> aio_pika.Message:
    """A marker: published to a stream, read back, it says everything before it was read."""
    return aio_pika.Message(b"", type=MARKER_TYPE, message_id=marker_id)


async def caught_up(
    markers: AbstractExchange,
    followers: Sequence[StreamFollower],
    timeout_s: float,
    *,
    progress: Callable[[int, float], None] | None = None,
) -> None:
    """Return once every follower has read everything published to its stream before this call.

    Without ``progress``, all of it within ``timeout_s``. With it (a restore, which may have
    millions of records to read), ``timeout_s`` bounds a *stall*: the wait goes on while the
    followers keep reading, and ``progress(messages read, seconds)`` is called every
    ``PROGRESS_EVERY_S``. Raises ``StreamUnavailable`` naming the streams that did not give
    the marker back in time.
    """
    marker_id = uuid.uuid4().hex
    waiting = {follower.stream: follower.expect(marker_id) for follower in followers}
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            await markers.publish(marker(marker_id), routing_key="")
            every = asyncio.gather(*waiting.values())
            read = sum(f.read for f in followers)
            while True:
                done, _ = await asyncio.wait({every}, timeout=PROGRESS_EVERY_S)
                if done:
                    every.result()
                    break
                if progress is not None and (now := sum(f.read for f in followers)) > read:
                    read = now
                    progress(read, loop.time() - started)
                    deadline.reschedule(loop.time() + timeout_s)
    except TimeoutError:
        late = [stream for stream, seen in waiting.items() if not seen.done()]
        what = (
            f"within {timeout_s:g}s" if progress is None else f"(nothing read for {timeout_s:g}s)"
        )
        raise StreamUnavailable(
            f"{', '.join(late) or 'the streams'} did not give back a marker {what}"
        ) from None
    except asyncio.CancelledError:
        if cancelled_here():
            raise
        # aiormq fails a pending confirm with CancelledError when it drops the channel.
        raise StreamUnavailable("the channel closed before the marker was confirmed") from None
    finally:
        for follower in followers:
            follower.forget(marker_id)
