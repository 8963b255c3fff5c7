"""The broker definitions of deploy/: loaded into the local broker under a vhost of the test's
own, each user does its job and is refused the rest."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from yarl import URL

from schemas import EnactmentStatus, decode_record
from schemas.names import Names
from tests.support.broker import rabbitmqctl
from tests.support.factories import plan_of, wait_for
from worker.core.seed import seed_subsystems
from worker.ops.definitions import ROLES, definitions
from worker.settings import WorkerSettings


@dataclass
class Vhost:
    """The definitions loaded under a fresh vhost, users prefixed to be the test's own."""

    host: URL
    vhost: str
    prefix: str
    passwords: dict[str, str]
    names: Names

    def url(self, role: str) -> str:
        user, password = quote(self.prefix + role, safe=""), quote(self.passwords[role], safe="")
        return (
            str(self.host.with_user(None)).replace("://", f"://{user}:{password}@", 1).rstrip("/")
            + "/"
            + quote(self.vhost, safe="")
        )

    def settings(self, role: str, **overrides: Any) -> WorkerSettings:
        overrides.setdefault("metrics_port", -1)
        overrides.setdefault("connect_retry_s", 0.0)
        return WorkerSettings(amqp_url=self.url(role), namespace=self.names.namespace, **overrides)


@pytest.fixture
def vhost(amqp_url: str) -> Iterator[Vhost]:
    host = URL(amqp_url)
    if host.host not in ("127.0.0.1", "localhost") or shutil.which("rabbitmqctl") is None:
        pytest.skip("loading definitions needs rabbitmqctl on the broker's machine")
    token = uuid.uuid4().hex[:10]
    loaded = Vhost(
        host=host,
        vhost=f"t-{token}",
        prefix=f"t{token}-",
        passwords={role: secrets.token_urlsafe(12) for role in ROLES},
        names=Names(f"n{token}"),
    )
    document = definitions(
        loaded.names, vhost=loaded.vhost, user_prefix=loaded.prefix, passwords=loaded.passwords
    )
    # On standard input: the broker may run as a user that cannot read the test's tmp_path.
    imported = subprocess.run(
        ["rabbitmqctl", "--quiet", "import_definitions"],
        input=json.dumps(document), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    try:
        yield loaded
    finally:
        rabbitmqctl("delete_vhost", loaded.vhost)
        for role in ROLES:
            rabbitmqctl("delete_user", loaded.prefix + role)


Attempt = Callable[[AbstractChannel], Awaitable[object]]


async def attempt(url: str, action: Attempt) -> None:
    """Run ``action`` on a channel with publisher confirms (so a refused publish raises)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await action(channel)
        await asyncio.sleep(0.2)  # a refusal closes the channel: let it arrive
        assert not channel.is_closed
    finally:
        await connection.close()


async def refused(url: str, action: Attempt) -> None:
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await attempt(url, action)


def publish(exchange: str, body: bytes = b"{}") -> Attempt:
    async def run(channel: AbstractChannel) -> None:
        target = await channel.get_exchange(exchange) if exchange else channel.default_exchange
        await target.publish(aio_pika.Message(body), routing_key=f"{exchange}.x")

    return run


def consume(queue: str) -> Attempt:
    async def run(channel: AbstractChannel) -> None:
        declared = await channel.get_queue(queue)
        await declared.consume(ack)

    return run


async def ack(message: AbstractIncomingMessage) -> None:
    await message.ack()


def declare(queue: str) -> Attempt:
    async def run(channel: AbstractChannel) -> None:
        await channel.declare_queue(queue, exclusive=True)

    return run


def delete(queue: str) -> Attempt:
    async def run(channel: AbstractChannel) -> None:
        await channel.queue_delete(queue)

    return run


async def test_each_user_may_do_its_job(vhost: Vhost, tmp_path: Path) -> None:
    from unittest.mock import Mock  # noqa: PLC0415

    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from worker.amqp.worker import Worker  # noqa: PLC0415
    from worker.subsystems.server import SubsystemServer  # noqa: PLC0415

    n = vhost.names
    # reflection: its own queue, bound to the records
    reflection = await aio_pika.connect(vhost.url("reflection"))
    channel = await reflection.channel()
    records = await channel.declare_queue(f"{n.namespace}.reflection.main", exclusive=True)
    await records.bind(n.results_exchange, "#")
    # subsystem: serves the detector; worker: declares nothing, consumes and publishes
    cycle = Mock()
    cycle._detector_config.latency_p95_threshold_ms = 200.0
    server_stop, server_ready = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(
        SubsystemServer(vhost.url("subsystem"), n.namespace).serve(
            seed_subsystems(cycle, None), stop=server_stop, ready=server_ready
        )
    )
    worker_stop = asyncio.Event()
    worker = Worker(vhost.settings("worker", declare_topology=False), registry=CollectorRegistry())
    running = asyncio.create_task(worker.run(worker_stop))
    try:
        async with asyncio.timeout(20):
            await server_ready.wait()
        await wait_for(lambda: worker.readiness()[0] or running.done(), what="the worker")
        assert not running.done(), running.result()
        # planner: publishes a plan
        plan = plan_of("TUNE_THRESHOLD", "FLAG_FOR_REVIEW", plan_id="roles")
        await attempt(vhost.url("planner"), publish_plan(n.plans_exchange, plan))
        got = []
        async with asyncio.timeout(20), records.iterator() as incoming:
            async for message in incoming:
                await message.ack()
                got.append(decode_record(message.body))
                if len(got) == 2:
                    break
        assert {r.status for r in got} == {EnactmentStatus.SUCCESS}, [r.detail for r in got]
    finally:
        worker_stop.set()
        server_stop.set()
        await asyncio.wait_for(asyncio.gather(running, server, return_exceptions=True), 30)
        await reflection.close()
    # operator: sees the review item, acks it, pauses, reads the state, follows the records
    from schemas.control import ControlCommand  # noqa: PLC0415
    from worker.ops.breakers import read_breakers  # noqa: PLC0415
    from worker.ops.control import read_control, send_control  # noqa: PLC0415
    from worker.ops.review import work_review  # noqa: PLC0415

    lines: list[str] = []
    operator = vhost.settings("operator")
    assert await work_review(operator, "ack", "roles-1", as_json=False, out=lines.append)
    assert "acked roles-1" in lines[-1]
    await send_control(operator, ControlCommand.PAUSE, reason="roles test", issued_by="test")
    control = await read_control(operator)
    assert await read_breakers(operator) == []
    assert control is not None
    assert control.reason == "roles test"
    await attempt(vhost.url("operator"), declare(n.tail_queue("x")))


def publish_plan(exchange: str, plan: dict[str, object]) -> Attempt:
    return publish(exchange, json.dumps(plan).encode())


REFUSALS: dict[str, list[Callable[[Names], Attempt]]] = {
    "planner": [
        lambda n: publish(n.results_exchange),
        lambda n: publish(n.control),
        lambda n: publish(n.review_exchange),
        lambda n: publish(""),  # the default exchange reaches any queue by name
        lambda n: consume(n.plans_queue),
        lambda n: consume(n.review_queue),
        lambda n: declare(f"{n.namespace}.mine"),
        lambda n: delete(n.plans_queue),
    ],
    "worker": [
        lambda n: publish(n.plans_exchange),
        lambda n: publish(n.control),
        lambda n: publish(""),
        lambda n: consume(n.review_queue),
        lambda n: declare(f"{n.namespace}.mine"),
        lambda n: delete(n.plans_queue),
    ],
    "reflection": [
        lambda n: publish(n.results_exchange),
        lambda n: publish(n.plans_exchange),
        lambda n: consume(n.plans_queue),
        lambda n: consume(n.review_queue),
        lambda n: consume(n.results_log),
        lambda n: declare(f"{n.namespace}.tail.x"),
    ],
    "operator": [
        lambda n: publish(n.plans_exchange),
        lambda n: publish(n.results_exchange),
        lambda n: publish(n.review_exchange),
        lambda n: publish(""),
        lambda n: consume(n.plans_queue),
        lambda n: delete(n.review_queue),
        lambda n: declare(f"{n.namespace}.reflection.x"),
    ],
    "subsystem": [
        lambda n: publish(n.results_exchange),
        lambda n: publish(n.plans_exchange),
        lambda n: publish(n.control),
        lambda n: consume(n.plans_queue),
        lambda n: consume(n.review_queue),
        lambda n: delete(n.plans_queue),
    ],
}


async def test_each_user_is_refused_everything_else(vhost: Vhost) -> None:
    failures = []
    for role, attempts in REFUSALS.items():
        for number, make in enumerate(attempts):
            try:
                await refused(vhost.url(role), make(vhost.names))
            except pytest.fail.Exception:
                failures.append(f"{role} #{number} was allowed")
    assert not failures, failures


def test_guest_has_no_access_to_the_vhost(vhost: Vhost) -> None:
    out = rabbitmqctl("list_permissions", "-p", vhost.vhost, "--no-table-headers")
    users = {line.split("\t", 1)[0] for line in out.splitlines() if line.strip()}
    assert users == {vhost.prefix + role for role in ROLES}
