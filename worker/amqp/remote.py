"""The subsystem ports over AMQP: a command on ``N.commands``, the reply on direct reply-to.

- No subsystem bound for the routing key: the broker returns the command, and the action
  is SKIPPED "no <subsystem> listening" (as the seed's "no orchestrator injected").
- A reply SUCCESS / FAILED / REJECTED: SUCCESS, or FAILED with the subsystem's reason.
- No reply: the optimiser's ``subsystem_timeout_s`` makes the action FAILED. The command
  carries the same deadline (and expires on the broker), so it is not applied later.
- A publish the broker did not confirm is retried: safe, because the subsystem drops a
  repeated ``action_id`` and answers with its first reply.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Final

import aio_pika
import msgspec
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from schemas import encode
from schemas.codec import JSON
from schemas.commands import (
    ReplyOutcome,
    Subsystem,
    SubsystemCommand,
    SubsystemReply,
    command_routing_key,
)
from schemas.names import Names
from worker.amqp.errors import BrokenReply
from worker.amqp.publisher import Publisher
from worker.core.errors import SubsystemUnavailable
from worker.core.ports import SubsystemResult, Subsystems

log = logging.getLogger(__name__)

DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to"
_reply_decoder: Final = msgspec.json.Decoder(SubsystemReply)


class RemoteSubsystems:
    """Every owner's port, sending its commands to the subsystem servers."""

    def __init__(
        self, publisher: Publisher, commands: AbstractExchange, *, timeout_s: float
    ) -> None:
        self._publisher = publisher
        self._commands = commands
        self._timeout_s = timeout_s
        self._pending: dict[str, asyncio.Future[SubsystemReply]] = {}

    @classmethod
    async def open(
        cls, connection: AbstractRobustConnection, names: Names, *, timeout_s: float
    ) -> RemoteSubsystems:
        """A channel of its own: direct reply-to needs the consumer on the publishing channel."""
        channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
        commands = await channel.get_exchange(names.commands_exchange)
        remote = cls(Publisher(channel, timeout_s=timeout_s), commands, timeout_s=timeout_s)
        replies = await channel.declare_queue(DIRECT_REPLY_TO, passive=True)
        await replies.consume(remote._on_reply, no_ack=True)
        return remote

    def subsystems(self) -> Subsystems:
        """Every owner's port: the servers bound to ``N.commands`` say who answers."""
        return Subsystems(dict.fromkeys(Subsystem, self))

    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        """Send ``command`` to the server of its owner and wait for its reply."""
        key = command_routing_key(command)
        owner = key.split(".", 1)[0]
        action_id = command.action_id
        correlation = f"{action_id}/{uuid.uuid4().hex[:12]}"  # unique per call, even on a repeat
        reply: asyncio.Future[SubsystemReply] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = reply
        try:
            message = aio_pika.Message(
                encode(command),
                content_type=JSON,
                message_id=action_id,
                correlation_id=correlation,
                reply_to=DIRECT_REPLY_TO,
                expiration=self._timeout_s,  # not consumed in time: the broker drops it
                type="subsystem_command",
            )
            # Retried when unconfirmed: the command's action_id makes a repeat harmless.
            if not await self._publisher.publish_idempotent(self._commands, key, message):
                raise SubsystemUnavailable(f"no {owner} listening")
            answer = await reply
        finally:
            self._pending.pop(correlation, None)
        if answer.action_id != action_id:
            raise BrokenReply(
                f"{owner} answered for action {answer.action_id!r}, not {action_id!r}"
            )
        if answer.outcome is ReplyOutcome.SUCCESS:
            if answer.repeat:
                log.info(
                    "%s had applied action %s before (for a worker that lost its plan): its "
                    "first answer, nothing applied again", owner, action_id,
                )  # fmt: skip
            return SubsystemResult(True, answer.detail, answer.change)
        if answer.outcome is ReplyOutcome.REJECTED:
            return SubsystemResult(False, f"{owner} rejected it: {answer.detail}")
        return SubsystemResult(False, f"{owner} failed: {answer.detail}")

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiting = self._pending.get(message.correlation_id or "")
        if waiting is None or waiting.done():
            # The action's record already says FAILED (timed out); if the subsystem made the
            # change after all, the people reading the log must learn it.
            try:
                late = _reply_decoder.decode(message.body)
                log.warning(
                    "late reply for action %s, after its record said FAILED: %s %s",
                    late.action_id, late.outcome.value, late.detail,
                )  # fmt: skip
            except (msgspec.DecodeError, UnicodeDecodeError):
                log.warning("late, unreadable reply %r dropped", message.correlation_id)
            return
        try:
            waiting.set_result(_reply_decoder.decode(message.body))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            waiting.set_exception(BrokenReply(f"broken reply: {exc}"))
