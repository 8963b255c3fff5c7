"""Confirmed, persistent, mandatory publishing with a timeout on every publish.

The channel is opened with publisher confirms and ``on_return_raises=False``, so an
unroutable message comes back as a returned message instead of an exception: the caller
decides whether that is fatal (a review item: yes) or only an error to report (a record
nobody is bound to receive).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.frame import marshal
from pamqp.header import ContentHeader
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from worker.amqp.errors import BROKER_ERRORS, PublishFailed
from worker.core.errors import OptimiserError, cancelled_here

log = logging.getLogger(__name__)

PERSISTENT: Final = aio_pika.DeliveryMode.PERSISTENT
_CLOSED: Final = (
    asyncio.CancelledError,
    aiormq.exceptions.ChannelClosed,
    aiormq.exceptions.ConnectionClosed,
)


class Outgoing(NamedTuple):
    """One message for ``publish_bodies``."""

    exchange: str
    routing_key: str
    body: bytes
    properties: aiormq.spec.Basic.Properties


#: Attempts of ``publish_idempotent`` before its ``PublishFailed`` reaches the caller.
IDEMPOTENT_ATTEMPTS: Final = 3


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
        """``publish`` for a body and its AMQP properties, without an ``aio_pika.Message``."""
        (outcome,) = await self.publish_bodies([Outgoing(exchange, routing_key, body, properties)])
        if isinstance(outcome, PublishFailed):
            raise outcome
        return outcome

    async def publish_bodies(self, messages: Sequence[Outgoing]) -> list[bool | PublishFailed]:
        """Publish each message and wait for the broker's confirms: for each, in order, True
        if routed, False if returned, or the ``PublishFailed`` that says why not confirmed
        (nacked, the timeout, the channel lost meanwhile: it may or may not have landed).

        The records' hot path: their frames are written in one go and their confirms awaited
        together, where one ``basic_publish`` each (a task, two timeouts, a lock and a write
        apiece) cost the worker a fifth of its time per action.
        """
        messages = [_with_id(message) for message in messages]
        outcomes: list[bool | PublishFailed] = [False] * len(messages)
        pending = list(range(len(messages)))
        while pending:  # one message id twice at once would confuse returns: one copy a round
            batch: list[int] = []
            later: list[int] = []
            seen: set[str] = set()
            for i in pending:
                message_id = _id_of(messages[i])
                (later if message_id in seen else batch).append(i)
                seen.add(message_id)
            sent = await self._publish_distinct([messages[i] for i in batch])
            for i, outcome in zip(batch, sent, strict=True):
                outcomes[i] = outcome
            pending = later
        return outcomes

    async def _publish_distinct(self, messages: list[Outgoing]) -> list[bool | PublishFailed]:
        ids = [_id_of(message) for message in messages]
        done = asyncio.get_running_loop().create_future()
        registered = False
        confirmations: list[asyncio.Future[object]] = []
        failure: str | None = None
        try:
            # One deadline for all of it: waiting for a reconnect, for an earlier publish with
            # one of these ids, and for the confirms themselves.
            async with asyncio.timeout(self._timeout_s):
                for message_id in ids:
                    while (earlier := self._in_flight.get(message_id)) is not None:
                        await asyncio.shield(earlier)
                for message_id in ids:
                    self._in_flight[message_id] = done
                registered = True
                channel = await self._channel.get_underlay_channel()
                confirmations = await _send(channel, messages)
                await asyncio.wait(confirmations)
        except TimeoutError:
            failure = f"no confirm from the broker within {self._timeout_s:g}s"
        except asyncio.CancelledError:
            if cancelled_here():
                raise
            # aiormq's, from a channel or connection closing under the publish: a failed
            # publish (the caller publishes again), never a cancellation of the caller's.
            failure = "publish failed: the channel closed under it"
        except BROKER_ERRORS as exc:
            failure = f"publish failed: {type(exc).__name__}: {exc}"
        finally:
            if registered:
                for message_id in ids:
                    del self._in_flight[message_id]
            done.set_result(None)
        outcomes: list[bool | PublishFailed] = []
        for i, message in enumerate(messages):
            where = f"exchange {message.exchange!r}, routing key {message.routing_key!r}"
            if i >= len(confirmations):
                outcomes.append(PublishFailed(f"{failure} ({where})"))
            else:
                outcomes.append(_outcome(confirmations[i], failure, where))
        return outcomes

    async def publish_idempotent(
        self,
        exchange: AbstractExchange,
        routing_key: str,
        message: aio_pika.Message,
        *,
        patience_s: float | None = None,
        failed: Callable[[], None] | None = None,
    ) -> bool:
        """``publish``, retried with backoff when the broker did not confirm (``failed`` is
        told of each attempt that was not confirmed).

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
                try:
                    return await self.publish(exchange, routing_key, message)
                except PublishFailed:
                    if failed is not None:
                        failed()
                    raise
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover


def _with_id(message: Outgoing) -> Outgoing:
    """The message with a message id: its confirm is matched to a return by it (aiormq would
    write a new one into the properties given, shared by every checkpoint)."""
    if message.properties.message_id:
        return message
    properties = copy.copy(message.properties)
    properties.message_id = uuid.uuid4().hex
    return message._replace(properties=properties)


def _id_of(message: Outgoing) -> str:
    return message.properties.message_id or ""


async def _send(
    underlay: aiormq.abc.AbstractChannel, messages: list[Outgoing]
) -> list[asyncio.Future[object]]:
    """aiormq's ``basic_publish`` (mandatory, with publisher confirms) for many messages at
    once: the same bookkeeping, a delivery tag and a confirmation each and the message id
    that matches a return to it, with the frames of all of them written in one go."""
    if not isinstance(underlay, aiormq.Channel):
        raise TypeError(f"not an aiormq channel: {underlay!r}")
    channel = underlay
    number, size = channel.number, channel.max_content_size
    parts: list[bytes] = []
    confirmations: list[asyncio.Future[object]] = []
    async with channel.lock:
        first = channel.delivery_tag + 1
        try:
            for exchange, routing_key, body, properties in messages:
                parts.append(
                    marshal(
                        Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
                        number,
                    )
                )
                parts.append(
                    marshal(ContentHeader(body_size=len(body), properties=properties), number)
                )
                for start in range(0, len(body), size):
                    parts.append(marshal(ContentBody(body[start : start + size]), number))
                channel.delivery_tag += 1
                confirmation = channel.create_future()
                channel.confirmations[channel.delivery_tag] = confirmation
                channel.message_id_delivery_tag[properties.message_id or ""] = channel.delivery_tag
                confirmations.append(confirmation)
            await channel.write_queue.put(ChannelFrame(payload=b"".join(parts), should_close=False))
        except BaseException:
            # Nothing was written: the broker has not seen these tags, so they are used again.
            for tag, (*_, properties) in zip(
                range(first, channel.delivery_tag + 1), messages, strict=False
            ):
                channel.confirmations.pop(tag, None)
                if channel.message_id_delivery_tag.get(properties.message_id or "") == tag:
                    channel.message_id_delivery_tag.pop(properties.message_id or "")
            channel.delivery_tag = first - 1
            for confirmation in confirmations:
                confirmation.cancel()
            raise
    for (*_, properties), tag, confirmation in zip(
        messages, range(first, channel.delivery_tag + 1), confirmations, strict=True
    ):
        confirmation.add_done_callback(_forget_id(channel, properties.message_id or "", tag))
    return confirmations


def _forget_id(channel: aiormq.Channel, message_id: str, tag: int) -> Callable[[object], None]:
    def forget(_: object) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            del channel.message_id_delivery_tag[message_id]

    return forget


def _outcome(
    confirmation: asyncio.Future[object], failure: str | None, where: str
) -> bool | PublishFailed:
    if not confirmation.done():
        return PublishFailed(f"{failure or 'no confirm'} ({where})")
    if confirmation.cancelled():
        return PublishFailed(f"the channel closed before the broker confirmed ({where})")
    exc = confirmation.exception()
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return PublishFailed(f"the broker refused the message ({where}): {exc.frame!r}")
    if isinstance(exc, _CLOSED):
        # aiormq fails pending confirms with the reason it dropped the channel (a missed
        # heartbeat, for one: CancelledError): a failed publish, not our cancellation.
        return PublishFailed(
            f"the channel closed before the broker confirmed ({where}): {type(exc).__name__}"
        )
    if exc is not None:
        return PublishFailed(f"publish failed ({where}): {type(exc).__name__}: {exc}")
    return not isinstance(confirmation.result(), DeliveredMessage)


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
