"""Shared fixtures: an injected clock, action factories, a seed-shaped cycle and orchestrator,
and a real RabbitMQ with workers and subsystem servers on it.

Fixtures only: what tests import lives in ``tests/support/``. The AMQP shell (``worker.amqp``)
is imported inside the fixtures that need a broker, so that the unit tests never load it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from unittest.mock import Mock

import pytest
from hypothesis import settings
from prometheus_client import CollectorRegistry

from tests.support.factories import ActionFactory, action, wait_for
from tests.support.processes import WorkerProcess
from tests.support.subsystems import seed_cycle, seed_orchestrator
from worker import ManualClock, OptimiserConfig, Subsystems
from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from tests.support.broker import Broker
    from tests.support.workers import ServerStarter, WorkerStarter

settings.register_profile("ci", max_examples=300, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def make_action() -> ActionFactory:
    return action


@pytest.fixture
def clock() -> ManualClock:
    """A clock at monotonic 0.0, like a host that has just booted."""
    return ManualClock()


@pytest.fixture
def cycle() -> Mock:
    return seed_cycle()


@pytest.fixture
def orchestrator() -> Mock:
    return seed_orchestrator()


# --- a real RabbitMQ ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def amqp_url() -> str:
    from tests.support.broker import broker_url_or_skip  # noqa: PLC0415 - loads the AMQP shell

    return broker_url_or_skip(os.environ)


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    """A connection for the test and a fresh namespace, deleted afterwards."""
    from tests.support.broker import Broker  # noqa: PLC0415 - loads the AMQP shell

    opened = await Broker.open(amqp_url, f"t{uuid.uuid4().hex[:12]}")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def start_worker(amqp_url: str, broker: Broker) -> AsyncIterator[WorkerStarter]:
    """Start in-process workers on the test's namespace; they are stopped after the test."""
    from tests.support.workers import RunningWorker  # noqa: PLC0415 - loads the AMQP shell
    from worker.amqp.worker import Worker  # noqa: PLC0415

    started: list[RunningWorker] = []

    async def start(
        *,
        subsystems: Subsystems | None = None,
        optimiser: OptimiserConfig | None = None,
        **settings: Any,
    ) -> RunningWorker:
        settings.setdefault("metrics_host", "127.0.0.1")
        settings.setdefault("metrics_port", 0)
        settings.setdefault("connect_retry_s", 5.0)
        settings.setdefault("amqp_url", amqp_url)
        worker_settings = WorkerSettings(
            namespace=broker.names.namespace,
            optimiser=optimiser or OptimiserConfig(),
            **settings,
        )
        registry = CollectorRegistry()
        worker = Worker(worker_settings, registry=registry, subsystems=subsystems)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        running = RunningWorker(worker, stop, task, registry)
        started.append(running)
        await wait_for(lambda: worker.readiness()[0] or task.done(), what="the worker to consume")
        if task.done():
            task.result()  # raises what stopped it
        return running

    yield start
    for running in started:
        if not running.task.done():
            await running.shutdown()


@pytest.fixture
async def serve(amqp_url: str, broker: Broker) -> AsyncIterator[ServerStarter]:
    """Start SubsystemServers on the test's namespace; stopped after the test."""
    from worker.subsystems.server import SubsystemServer  # noqa: PLC0415 - loads the AMQP shell

    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(subsystems: Subsystems) -> SubsystemServer:
        server = SubsystemServer(amqp_url, broker.names.namespace)
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(server.serve(subsystems, stop=stop, ready=ready))
        running.append((stop, task))
        async with asyncio.timeout(20):
            await ready.wait()
        return server

    yield start
    for stop, task in running:
        stop.set()
        async with asyncio.timeout(20):
            await task


@pytest.fixture(autouse=True)
async def no_worker_process_left() -> AsyncIterator[None]:
    """A test that fails half-way must not leave a worker process consuming behind it."""
    yield
    while WorkerProcess.started:
        process = WorkerProcess.started.pop()
        if process.returncode is None:
            process.kill()
            await process.wait(timeout=10)
