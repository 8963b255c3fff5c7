"""Confirmed, persistent, mandatory publishing with a timeout on every publish.

The channel is opened with publisher confirms and ``on_return_raises=False``, so an
unroutable message comes back as a returned message instead of an exception: the caller
decides whether that is fatal (a review item: yes) or only an error to report (a record
nobody is bound to receive).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.abc import DeliveredMessage
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from worker.errors import OptimiserError

log = logging.getLogger(__name__)

PERSISTENT: Final = aio_pika.DeliveryMode.PERSISTENT
#: Attempts of ``publish_idempotent`` before its ``PublishFailed`` reaches the caller.
IDEMPOTENT_ATTEMPTS: Final = 3


class PublishFailed(OptimiserError):
    """The broker did not confirm a message: nacked, timed out, or the channel went away."""


class Publisher:
    """Publishes on one confirming channel; returns whether the broker could route it."""

    def __init__(self, channel: AbstractChannel, *, timeout_s: float) -> None:
        self._channel = channel
        self._timeout_s = timeout_s
        # aiormq matches a returned message to its publish by message_id, so one id must not
        # be in flight twice on a channel: a second publish with it waits for the first.
        self._in_flight: dict[str, asyncio.Future[None]] = {}

    async def publish(
        self, exchange: AbstractExchange, routing_key: str, message: aio_pika.Message
    ) -> bool:
        """Publish and wait for the broker's confirm: True if routed, False if returned.

        Raises ``PublishFailed`` when the broker nacks, the confirm does not come within the
        timeout, or the connection is lost meanwhile (the message may or may not have landed).
        """
        return await self.publish_body(exchange.name, routing_key, message.body, message.properties)

    async def publish_body(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: aiormq.spec.Basic.Properties,
    ) -> bool:
        """``publish`` for a body and its AMQP properties, without an ``aio_pika.Message``.

        The records' hot path: building an ``aio_pika.Message`` (and its properties again at
        each publish) cost the worker about a tenth of its time per action.
        """
        message_id = properties.message_id or ""
        done: asyncio.Future[None] | None = None
        try:
            # One deadline for all of it: waiting for a reconnect, for an earlier publish with
            # this id, and for the confirm itself.
            async with asyncio.timeout(self._timeout_s):
                while (earlier := self._in_flight.get(message_id)) is not None:
                    await asyncio.shield(earlier)
                done = asyncio.get_running_loop().create_future()
                self._in_flight[message_id] = done
                channel = await self._channel.get_underlay_channel()
                result = await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=True,
                )
        except TimeoutError:
            raise PublishFailed(
                f"no confirm from the broker within {self._timeout_s:g}s "
                f"(exchange {exchange!r}, routing key {routing_key!r})"
            ) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled: let it through
            # aiormq fails pending confirms with CancelledError when it drops a channel
            # (a missed heartbeat, for one): that is a failed publish, not our cancellation.
            raise PublishFailed(
                f"the channel closed before the broker confirmed (exchange {exchange!r})"
            ) from None
        except aiormq.exceptions.DeliveryError as exc:
            raise PublishFailed(
                f"the broker refused the message (exchange {exchange!r}, "
                f"routing key {routing_key!r}): {exc.frame!r}"
            ) from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise PublishFailed(
                f"publish to {exchange!r} failed: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            if done is not None:
                del self._in_flight[message_id]
                done.set_result(None)
        return not isinstance(result, DeliveredMessage)

    async def publish_idempotent(
        self,
        exchange: AbstractExchange,
        routing_key: str,
        message: aio_pika.Message,
        *,
        patience_s: float | None = None,
    ) -> bool:
        """``publish``, retried with backoff when the broker did not confirm.

        Only for a message whose ``message_id`` lets its reader drop a repeat: a publish that
        timed out may have landed after all. ``IDEMPOTENT_ATTEMPTS`` attempts, or with
        ``patience_s`` as many as fit in that long (for an action in hand, which would rather
        wait out a broker outage than be recorded FAILED).
        """
        stop = (
            stop_after_attempt(IDEMPOTENT_ATTEMPTS)
            if patience_s is None
            else stop_after_delay(patience_s)
        )
        retrying = AsyncRetrying(
            stop=stop,
            wait=wait_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type(PublishFailed),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self.publish(exchange, routing_key, message)
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover


def _declare_hint(namespace: str) -> str:
    return (
        f"start `self-optimiser run` once (namespace {namespace!r}, this version) so that it "
        f"declares it, or load the definitions of deploy/"
    )


async def bind_or_explain(
    queue: AbstractQueue, exchange_name: str, routing_key: str, namespace: str
) -> None:
    """Bind a tool's queue; a missing exchange (a namespace never declared) is one sentence."""
    try:
        await queue.bind(exchange_name, routing_key)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise OptimiserError(
            f"exchange {exchange_name!r} does not exist: {_declare_hint(namespace)}"
        ) from None


async def publish_once(
    channel: AbstractChannel,
    exchange_name: str,
    message: aio_pika.Message,
    *,
    namespace: str,
    timeout_s: float,
    if_unconfirmed: str,
) -> None:
    """One confirmed, mandatory publish for a command-line tool; each way it can fail is an
    ``OptimiserError`` saying what to do (``if_unconfirmed`` when the broker did not confirm)."""
    declare_hint = _declare_hint(namespace)
    try:
        exchange = await channel.get_exchange(exchange_name)
        returned = await exchange.publish(
            message, routing_key="", mandatory=True, timeout=timeout_s
        )
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise OptimiserError(f"exchange {exchange_name!r} does not exist: {declare_hint}") from None
    except (aiormq.exceptions.DeliveryError, TimeoutError) as exc:
        raise OptimiserError(
            f"the broker did not confirm the message ({type(exc).__name__}): {if_unconfirmed}"
        ) from None
    if isinstance(returned, DeliveredMessage):
        raise OptimiserError(f"nothing is bound to exchange {exchange_name!r}: {declare_hint}")
