"""The helper that lets a real CognitiveCycle or orchestrator take the worker's commands.

    server = SubsystemServer("amqp://guest:guest@localhost:5672/", "optimiser")
    await server.serve(seed_subsystems(cognitive_cycle=cycle, orchestrator=orchestrator))

It binds one queue per subsystem it is given (``N.commands.detector`` for ``detector.*``, and so
on), applies each command to the port, and replies on the command's ``reply_to``. An
``action_id`` it has applied before gets the first reply again and changes nothing. A command
whose deadline has passed is REJECTED, never applied. The queues go away with the server, so
a kind with no server running is SKIPPED by the worker, not left waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

import aio_pika
import aiormq
import msgspec
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from schemas import encode
from schemas.codec import JSON
from schemas.commands import (
    OWNER,
    ReplyOutcome,
    SubsystemCommand,
    SubsystemReply,
)
from schemas.names import Names
from worker.amqp import frames
from worker.core.clock import Clock, SystemClock
from worker.core.errors import SubsystemUnavailable
from worker.core.ports import (
    SubsystemResult,
    Subsystems,
)

log = logging.getLogger(__name__)

_command_decoder: Final = msgspec.json.Decoder(SubsystemCommand)


class SubsystemServer:
    """Serves the subsystem ports it is given to the worker's commands over AMQP."""

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        remember: int = 100_000,
        prefetch: int = 16,
        clock: Clock | None = None,
    ) -> None:
        self._url = url
        self._names = Names(namespace)
        self._remember = remember
        self._prefetch = prefetch
        self._clock: Clock = clock or SystemClock()
        # action_id -> its reply (answered) or the reply being worked out (in progress)
        self._replies: OrderedDict[str, asyncio.Future[SubsystemReply]] = OrderedDict()
        self.applied = 0  # commands applied to a port, repeats excluded
        self.received = 0  # commands received, repeats included

    async def serve(
        self,
        subsystems: Subsystems,
        *,
        stop: asyncio.Event | None = None,
        ready: asyncio.Event | None = None,
    ) -> None:
        """Serve until ``stop`` is set (forever without one)."""
        # It connects without worker.amqp.connection: a command it cannot read must not cost
        # the connection.
        frames.install()
        if not subsystems:
            raise ValueError("serve() needs at least one subsystem")
        connection = await aio_pika.connect_robust(
            self._url,
            # As the worker: a second without a consumer is a second of commands SKIPPED.
            reconnect_interval=1.0,
            client_properties={"connection_name": f"subsystems {self._names.namespace}"},
        )
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            await self._ensure_commands_exchange(connection)
            for subsystem in subsystems:
                queue = await channel.declare_queue(
                    self._names.command_queue(subsystem.value), auto_delete=True
                )
                await queue.bind(self._names.commands_exchange, f"{subsystem.value}.*")
                await queue.consume(self._consumer(channel, subsystems))
            log.info(
                "serving %s on %s",
                ", ".join(s.value for s in subsystems), self._names.commands_exchange,
            )  # fmt: skip
            if ready is not None:
                ready.set()
            await (stop or asyncio.Event()).wait()
        finally:
            await connection.close()

    async def _ensure_commands_exchange(self, connection: AbstractRobustConnection) -> None:
        """Declare ``N.commands`` only if it does not exist yet: a subsystem user needs no right
        to configure it once the worker or the broker definitions have made it."""
        name = self._names.commands_exchange
        channel = await connection.channel()
        try:
            await channel.get_exchange(name)  # passive
        except aiormq.exceptions.ChannelNotFoundEntity:
            channel = await connection.channel()  # the failed declare closed the first one
            await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
        await channel.close()

    def _consumer(
        self,
        channel: AbstractChannel,
        ports: Subsystems,
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_command(message: AbstractIncomingMessage) -> None:
            reply = await self._reply_to(message, ports)
            if message.reply_to:
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        encode(reply), content_type=JSON, correlation_id=message.correlation_id
                    ),
                    routing_key=message.reply_to,
                )
            await message.ack()

        return on_command

    async def _reply_to(
        self,
        message: AbstractIncomingMessage,
        ports: Subsystems,
    ) -> SubsystemReply:
        try:
            command = _command_decoder.decode(message.body)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return SubsystemReply(
                action_id=message.message_id or "unknown",
                outcome=ReplyOutcome.REJECTED,
                detail=f"unreadable command: {exc}"[:2000],
            )
        self.received += 1
        earlier = self._replies.get(command.action_id)
        if earlier is not None:  # a repeat: the first reply, nothing applied
            self._replies.move_to_end(command.action_id)
            return msgspec.structs.replace(await asyncio.shield(earlier), repeat=True)
        answer: asyncio.Future[SubsystemReply] = asyncio.get_running_loop().create_future()
        self._replies[command.action_id] = answer
        while len(self._replies) > self._remember:
            self._replies.popitem(last=False)
        try:
            reply = await self._apply(command, ports)
            answer.set_result(reply)
        finally:
            if not answer.done():  # cancelled mid-way: forget it, so a repeat is applied anew
                self._replies.pop(command.action_id, None)
                answer.cancel()
        return reply

    async def _apply(
        self,
        command: SubsystemCommand,
        ports: Subsystems,
    ) -> SubsystemReply:
        def reply(
            outcome: ReplyOutcome, detail: str, result: SubsystemResult | None = None
        ) -> SubsystemReply:
            return SubsystemReply(
                action_id=command.action_id,
                outcome=outcome,
                detail=detail[:2000],
                change=result.change if result is not None else None,
            )

        if self._clock.now() > command.deadline:
            return reply(
                ReplyOutcome.REJECTED,
                f"expired: the deadline {command.deadline.isoformat()} passed",
            )
        owner = OWNER[type(command.arguments)]
        port = ports.get(owner)
        if port is None:
            return reply(ReplyOutcome.REJECTED, f"this server does not serve {owner.value}")
        try:
            result = await port.apply(command)
        except SubsystemUnavailable as exc:
            return reply(ReplyOutcome.REJECTED, str(exc))
        except Exception as exc:
            log.warning("command %s raised %s: %s", command.action_id, type(exc).__name__, exc)
            return reply(ReplyOutcome.FAILED, f"{type(exc).__name__}: {exc}")
        self.applied += 1
        outcome = ReplyOutcome.SUCCESS if result.succeeded else ReplyOutcome.FAILED
        return reply(outcome, result.detail, result)
