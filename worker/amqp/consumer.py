"""Consuming the plans queue on aiormq's channel, under aio-pika's robust one.

aio-pika hands each delivery over as an ``IncomingMessage`` in a task of its own, beside the
task aiormq already runs it in: at one action a plan that was a sixth of the worker's time,
more than anything of ours. ``PlanConsumer`` hands aiormq's ``DeliveredMessage`` to a plain
callback instead (the worker starts its own task there, which a closed channel does not
cancel), consumes again after each reconnect, and after the broker cancelled the consumer (the
queue deleted and declared again: aio-pika's robust queue stays silent then), and cancels it at
shutdown. What becomes of each delivery is the plan handler's (``worker.amqp.plans``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiormq
from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import DeliveredMessage

from worker.amqp.streams import consume_again

log = logging.getLogger(__name__)


class PlanConsumer:
    def __init__(
        self,
        channel: AbstractRobustChannel,
        queue: str,
        on_delivery: Callable[[DeliveredMessage], None],
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._on_delivery = on_delivery
        self._tag: str | None = None
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._resuming: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        await self._consume()
        self._channel.reopen_callbacks.add(self._reopened)

    @property
    def consuming(self) -> bool:
        """Whether the broker is giving this consumer plans now (as far as it knows)."""
        underlay = self._underlay
        return (
            underlay is not None
            and not underlay.is_closed
            and (self._resuming is None or self._resuming.done())
        )

    async def cancel(self) -> None:
        """No more deliveries; those in hand can still be settled (the channel stays open)."""
        self._stopped = True
        self._channel.reopen_callbacks.discard(self._reopened)
        if self._resuming is not None:
            self._resuming.cancel()
        underlay, tag = self._underlay, self._tag
        if underlay is not None and tag is not None and not underlay.is_closed:
            await underlay.basic_cancel(tag)

    async def _consume(self) -> None:
        underlay = await self._channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(self._broker_cancelled)
        consuming = await underlay.basic_consume(self._queue, self._deliver)
        self._underlay, self._tag = underlay, consuming.consumer_tag

    async def _deliver(self, message: DeliveredMessage) -> None:
        # aiormq runs this in a task of its own; the plan gets one of the worker's.
        self._on_delivery(message)

    async def _reopened(self, _channel: object) -> None:
        # After a reconnect: consume again, in a task of its own (so that a queue that is
        # gone cannot fail the channel's restore).
        self._resume()

    async def _broker_cancelled(self, frame: aiormq.spec.Basic.Cancel) -> None:
        if frame.consumer_tag == self._tag and not self._stopped:
            log.warning("the broker cancelled the consumer of %s; consuming it again", self._queue)
            self._resume()

    def _resume(self) -> None:
        if not self._stopped and (self._resuming is None or self._resuming.done()):
            self._resuming = asyncio.create_task(self._consume_again())

    async def _consume_again(self) -> None:
        await consume_again(self._queue, self._consume, lambda: not self._stopped)
