"""Finding a real RabbitMQ for the integration tests, and talking to it from a test.

Discovery order (DESIGN.md): ``OPTIMISER_TEST_AMQP_URL`` if set; else the local broker at
``amqp://guest:guest@127.0.0.1:5672/`` if it answers; else a testcontainers RabbitMQ when
Docker is there. In CI a missing broker fails the run; elsewhere the integration tests skip.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from schemas import EnactmentRecord, decode_record
from schemas.names import DELIVERY_LIMIT, Names
from worker.amqp import frames
from worker.amqp.topology import queue_states

LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/"


async def read_stream(
    connection: AbstractRobustConnection, stream: str, *, quiet_s: float
) -> list[tuple[str | None, bytes]]:
    """(AMQP type, body) of every message of ``stream``, from its first until nothing has
    come for ``quiet_s``."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1000)
    got: list[tuple[str | None, bytes]] = []
    last_seen = asyncio.get_running_loop().time()

    async def take(message: AbstractIncomingMessage) -> None:
        nonlocal last_seen
        last_seen = asyncio.get_running_loop().time()
        got.append((message.type, message.body))
        await message.ack()

    queue = await channel.get_queue(stream, ensure=False)
    await queue.consume(take, arguments={"x-stream-offset": "first"})
    while asyncio.get_running_loop().time() - last_seen < quiet_s:
        await asyncio.sleep(0.1)
    await channel.close()
    return got


def reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def start_container() -> str | None:
    """A testcontainers RabbitMQ's URL, or None when there is no Docker engine."""
    try:
        from testcontainers.rabbitmq import RabbitMqContainer  # noqa: PLC0415 - only with Docker
    except ImportError:
        return None
    try:
        container = RabbitMqContainer("rabbitmq:3.13-management").start()
    except Exception:  # docker.errors.DockerException and friends: no engine here
        return None
    host = container.get_container_host_ip()
    port = container.get_exposed_port(container.port)
    return f"amqp://{container.username}:{container.password}@{host}:{port}/"


def discover_broker(
    environ: Mapping[str, str],
    *,
    is_reachable: Callable[[str], bool] = reachable,
    container: Callable[[], str | None] = start_container,
) -> tuple[str | None, str]:
    """(url or None, where it came from / why there is none), in DESIGN.md's order."""
    explicit = environ.get("OPTIMISER_TEST_AMQP_URL")
    if explicit:
        return explicit, "OPTIMISER_TEST_AMQP_URL"
    if is_reachable(LOCAL_URL):
        return LOCAL_URL, "local broker"
    url = container()
    if url is not None:
        return url, "testcontainers"
    return None, (
        "no RabbitMQ: OPTIMISER_TEST_AMQP_URL is not set, nothing answers on 127.0.0.1:5672 "
        "and Docker is not available for testcontainers"
    )


def broker_url_or_skip(environ: Mapping[str, str]) -> str:
    """The broker to test against; fail in CI when there is none, skip elsewhere."""
    url, why = discover_broker(environ)
    if url is None:
        if environ.get("CI"):
            pytest.fail(f"CI needs a RabbitMQ broker: {why}", pytrace=False)
        pytest.skip(why)
    return url


def rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl against the local broker (fault injection); return its output."""
    done = subprocess.run(
        ["rabbitmqctl", "--quiet", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def worker_connection_pids(namespace: str) -> list[str]:
    """Pids of the worker's connections in ``namespace``, by the name it gives them."""
    out = rabbitmqctl("list_connections", "pid", "client_properties", "--no-table-headers")
    wanted = f'{{"connection_name","self-optimiser {namespace} '
    return [line.split("\t", 1)[0] for line in out.splitlines() if wanted in line]


@dataclass
class Broker:
    """A test's own connection to the broker, scoped to one namespace."""

    url: str
    names: Names
    connection: AbstractRobustConnection
    channel: AbstractChannel
    extra_queues: list[str] = field(default_factory=list)
    delivery_limit: int = DELIVERY_LIMIT

    @classmethod
    async def open(cls, url: str, namespace: str) -> Broker:
        # The tests read back what hostile planners sent, as the worker's connections do.
        frames.install()
        connection = await aio_pika.connect_robust(url)
        channel = await connection.channel()
        return cls(url, Names(namespace), connection, channel)

    async def declare_topology(self) -> None:
        """Declare what the worker declares, so the test can publish before it starts."""
        from worker.amqp.topology import declare  # noqa: PLC0415

        await declare(self.channel, self.names, delivery_limit=self.delivery_limit)

    async def publish_plan(
        self, body: bytes | str | dict[str, Any], *, timeout: float | None = None, **properties: Any
    ) -> None:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        properties.setdefault("content_type", "application/json")
        properties.setdefault("delivery_mode", aio_pika.DeliveryMode.PERSISTENT)
        exchange = await self.channel.get_exchange(self.names.plans_exchange)
        await exchange.publish(
            aio_pika.Message(body, **properties), routing_key="", timeout=timeout
        )

    async def results_queue(self, pattern: str = "#") -> aio_pika.abc.AbstractQueue:
        """A queue bound to ``N.results`` with ``pattern``, deleted at clean-up.

        Durable: a broker restart must not drop the records that land before this test's own
        connection is back (the worker, reconnecting every second, is often first).
        """
        await self.declare_topology()
        queue = await self.channel.declare_queue(
            f"{self.names.namespace}.test-results.{pattern}", durable=True
        )
        await queue.bind(self.names.results_exchange, pattern)
        self.extra_queues.append(queue.name)
        return queue

    async def refuse_publishes(
        self, exchange: str, routing_key: str = ""
    ) -> aio_pika.abc.AbstractQueue:
        """Bind to ``exchange`` a queue that rejects every message, so the broker nacks each
        publish routed there (the namespace declared first)."""
        await self.declare_topology()
        queue = await self.channel.declare_queue(
            f"{self.names.namespace}.refusing.{exchange}",
            arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )
        self.extra_queues.append(queue.name)
        await queue.bind(exchange, routing_key)
        return queue

    async def depth(self, queue_name: str) -> int:
        """Messages ready in ``queue_name`` (``queue_states`` says why on a fresh channel)."""
        state = (await queue_states(self.connection, {queue_name: queue_name}))[queue_name]
        if state is None:
            raise AssertionError(f"queue {queue_name!r} does not exist")
        return state.messages

    async def drain(
        self, queue_name: str, *, expect: int, timeout: float = 20.0
    ) -> list[AbstractIncomingMessage]:
        """Take (and ack) messages from ``queue_name`` until ``expect`` came, or time runs out.

        A consumer, not basic.get (which quorum queues with a single active consumer refuse),
        on a channel of its own with prefetch 1, so nothing beyond ``expect`` is taken.
        """
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=1)
        got: list[AbstractIncomingMessage] = []
        enough = asyncio.Event()

        async def take(message: AbstractIncomingMessage) -> None:
            if len(got) >= expect:
                return  # left unacked: back to the queue when the channel closes
            got.append(message)
            await message.ack()
            if len(got) >= expect:
                enough.set()

        try:
            queue = await channel.declare_queue(queue_name, passive=True)
            await queue.consume(take)
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await enough.wait()
        finally:
            await channel.close()
        return got

    async def records(
        self, queue_name: str, *, expect: int, timeout: float = 20.0
    ) -> list[EnactmentRecord]:
        return [
            decode_record(m.body)
            for m in await self.drain(queue_name, expect=expect, timeout=timeout)
        ]

    async def close(self) -> None:
        """Delete every queue and exchange of the namespace, then disconnect."""
        names = self.names
        # A connection of its own: a fault test may have just had the broker close ours.
        cleaner = await aio_pika.connect(self.url)
        channel = await cleaner.channel()
        for queue in [*names.queues, *self.extra_queues]:
            with suppress(Exception):
                await channel.queue_delete(queue)
        for exchange in names.exchanges:
            with suppress(Exception):
                await channel.exchange_delete(exchange)
        await cleaner.close()
        with suppress(Exception):
            await self.connection.close()
