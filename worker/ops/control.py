"""The operators' side of the kill switch: publish a pause, a resume or a breaker reset to
``N.control``, and read the state it leaves."""

from __future__ import annotations

import getpass
import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime

import aio_pika
import aiormq
import msgspec
from aio_pika.abc import AbstractRobustConnection

from schemas import ActionKind, encode
from schemas.codec import JSON
from schemas.control import ControlCommand, ControlMessage
from schemas.names import Names
from worker.amqp.connection import one_shot
from worker.amqp.control import ControlFollower
from worker.amqp.publisher import PERSISTENT, publish_once
from worker.amqp.streams import caught_up
from worker.core.errors import OptimiserError
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def operator_name() -> str:
    """``user@host`` of whoever runs the command, for the audit trail."""
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def send_control(
    settings: WorkerSettings,
    command: ControlCommand,
    *,
    reason: str,
    issued_by: str,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    module: str | None = None,
    action_kind: ActionKind | None = None,
    since: datetime | None = None,
) -> ControlMessage:
    """Publish one pause, resume or breaker reset (of ``module``, ``action_kind``) to
    ``N.control``; return it once the broker confirmed it."""
    names = Names(settings.namespace)
    control = ControlMessage(
        command=command,
        reason=reason,
        issued_by=issued_by,
        issued_at=now(),
        module=module,
        action_kind=action_kind,
        since=since,
    )
    try:
        msgspec.json.decode(encode(control), type=ControlMessage)  # the same checks as readers
    except msgspec.ValidationError as exc:
        raise OptimiserError(f"the {command.value} message is not valid: {exc}") from None
    async with one_shot(settings, f"{command.value}-cli") as connection:
        channel = await connection.channel(publisher_confirms=True)
        await publish_once(
            channel,
            names.control,
            aio_pika.Message(
                encode(control),
                content_type=JSON,
                delivery_mode=PERSISTENT,
                type=f"control.{command.value}",
            ),
            namespace=names.namespace,
            timeout_s=settings.publish_timeout_s,
            if_unconfirmed=f"run `self-optimiser status` to see whether the {command.value} "
            f"took effect, and try again",
        )
    return control


async def read_control(settings: WorkerSettings) -> ControlMessage | None:
    """The last pause or resume of the namespace (None if there never was one)."""
    names = Names(settings.namespace)
    async with one_shot(settings, "status-cli") as connection:
        follower = ControlFollower(names)
        await follow_control(connection, follower, settings.state_timeout_s)
        await follower.close()
        return follower.current


async def follow_control(
    connection: AbstractRobustConnection, follower: ControlFollower, timeout_s: float
) -> None:
    """Read ``N.control`` from its first message up to now, as someone who may publish to
    ``N.control`` but not to ``N.markers`` (an operator): the marker goes through it."""
    names_control = follower.stream
    try:
        await follower.follow(connection, offset="first")
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise OptimiserError(
            f"stream {names_control!r} does not exist: start `self-optimiser run` once "
            f"(this namespace) so that it declares it"
        ) from None
    channel = await connection.channel()
    await caught_up(await channel.get_exchange(names_control), [follower], timeout_s)
