"""Guardrail state that survives restarts and failovers, kept in RabbitMQ itself.

Every record the worker publishes to ``N.results`` also lands in the stream ``N.results.log``.
At start-up the worker reads that stream from ``now - max(cool_down_s, dedup_window_s)`` and
rebuilds two things before it consumes a single plan:

- the records by ``action_id``: an action seen before is not enacted again; its original
  record is published again, marked ``replay``;
- the cool-downs: every SUCCESS re-arms its (module, kind) from the time it completed.

It then keeps following the stream, so a standby replica stays current and takes over with
the state of the active one. ``barrier()`` publishes a marker into the stream and waits for
it to come back: everything published before it has then been read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Final

import aio_pika
import msgspec
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from schemas import EnactmentRecord, EnactmentStatus, decode_record
from worker.clock import Clock
from worker.errors import OptimiserError
from worker.optimiser import AsyncSelfOptimiser
from worker.topology import Names

log = logging.getLogger(__name__)

MARKER_TYPE: Final = "state-marker"
#: Records read from the stream before each acknowledgement round-trip.
STREAM_PREFETCH: Final = 1000


class StateUnavailable(OptimiserError):
    """The guardrail state could not be read from the stream; the worker must not enact."""


class RecordMemory:
    """Records by ``action_id`` for ``window_s`` (at most ``limit`` of them), oldest first out."""

    def __init__(self, *, window_s: float, limit: int, clock: Clock) -> None:
        self._window = timedelta(seconds=window_s)
        self._limit = limit
        self._clock = clock
        self._records: OrderedDict[str, EnactmentRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, action_id: str) -> EnactmentRecord | None:
        return self._records.get(action_id)

    def remember(self, record: EnactmentRecord) -> None:
        """Keep the first record of an action; replays and later copies change nothing."""
        action_id = record.action.action_id
        if action_id in self._records or record.replay:
            return
        self._records[action_id] = record
        self._forget_old()

    def _forget_old(self) -> None:
        oldest_kept = self._clock.now() - self._window
        while self._records:
            first = next(iter(self._records.values()))
            if len(self._records) <= self._limit and first.attempted_at >= oldest_kept:
                break
            self._records.popitem(last=False)


class StateFollower:
    """Reads ``N.results.log`` into the record memory and the optimiser's cool-downs."""

    def __init__(
        self,
        memory: RecordMemory,
        optimiser: AsyncSelfOptimiser,
        names: Names,
        *,
        clock: Clock,
    ) -> None:
        self._memory = memory
        self._optimiser = optimiser
        self._names = names
        self._clock = clock
        self._channel: AbstractChannel | None = None
        self._markers: dict[str, asyncio.Future[None]] = {}
        self.records_read = 0

    async def start(
        self,
        reading: AbstractRobustConnection,
        publishing: AbstractRobustConnection,
        *,
        since: datetime,
        timeout_s: float,
    ) -> None:
        """Follow the stream from ``since``; return once everything already in it is read.

        Markers go out on the ``publishing`` connection: a connection that publishes can be
        blocked by the broker (a resource alarm), and the reading one must never be.
        """
        channel = await reading.channel()
        markers = await publishing.channel()
        try:
            await channel.set_qos(prefetch_count=STREAM_PREFETCH)
            stream = await channel.declare_queue(self._names.results_log, passive=True)
            await stream.consume(self._on_message, arguments={"x-stream-offset": since})
            self._channel = markers
            await self.barrier(timeout_s)
        except BaseException:
            self._channel = None
            for opened in (channel, markers):
                with contextlib.suppress(Exception):
                    await opened.close()
            raise
        log.info(
            "state restored from %s: %d records since %s, %d action ids remembered",
            self._names.results_log, self.records_read, since.isoformat(timespec="seconds"),
            len(self._memory),
        )  # fmt: skip

    async def barrier(self, timeout_s: float) -> None:
        """Wait until every record published to the stream before this call has been read."""
        if self._channel is None:
            raise StateUnavailable("the state stream is not being followed")
        marker = uuid.uuid4().hex
        seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers[marker] = seen
        try:
            async with asyncio.timeout(timeout_s):
                await self._channel.default_exchange.publish(
                    aio_pika.Message(b"", type=MARKER_TYPE, message_id=marker),
                    routing_key=self._names.results_log,
                )
                await seen
        except TimeoutError:
            raise StateUnavailable(
                f"{self._names.results_log} did not give back a marker within {timeout_s:g}s"
            ) from None
        finally:
            self._markers.pop(marker, None)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await message.ack()  # streams need acks to keep the credit flowing
        if message.type == MARKER_TYPE:
            waiting = self._markers.get(message.message_id or "")
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
            return
        try:
            record = decode_record(message.body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            log.warning("a message in %s is not a record; ignored", self._names.results_log)
            return
        self.records_read += 1
        self.learn(record)

    def learn(self, record: EnactmentRecord) -> None:
        """Take in one record, from the stream or straight from ``enact()``."""
        self._memory.remember(record)
        if record.status is EnactmentStatus.SUCCESS and not record.replay:
            completed = record.attempted_at + timedelta(seconds=record.duration_s)
            self._optimiser.arm_cool_down(
                record.action.module_name, record.action.action_kind, completed
            )
