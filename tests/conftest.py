"""Shared fixtures: an injected clock, action factories, a seed-shaped cycle and orchestrator."""

from __future__ import annotations

import asyncio
import enum
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, Mock

import pytest
from hypothesis import settings
from prometheus_client import CollectorRegistry

from schemas import ActionKind, ImprovementAction
from tests.support.broker import Broker, discover_broker
from tests.support.processes import WorkerProcess
from worker import DetectorConfig, ManualClock, OptimiserConfig, Subsystems
from worker.amqp.worker import Worker
from worker.settings import WorkerSettings
from worker.subsystems.server import SubsystemServer

settings.register_profile("ci", max_examples=300, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

_ids = itertools.count(1)

ActionFactory = Callable[..., ImprovementAction]


def action(
    kind: ActionKind | str = ActionKind.NO_OP,
    module: str = "cognition.detector",
    *,
    action_id: str | None = None,
    **parameters: str,
) -> ImprovementAction:
    """An action with a fresh id; keyword arguments become its parameters."""
    return ImprovementAction(
        action_id=action_id or f"act-{next(_ids)}",
        module_name=module,
        action_kind=ActionKind(kind),
        parameters=parameters,
        rationale="test",
    )


@pytest.fixture
def make_action() -> ActionFactory:
    return action


@pytest.fixture
def clock() -> ManualClock:
    """A clock at monotonic 0.0, like a host that has just booted."""
    return ManualClock()


class SwapOutcome(enum.Enum):
    SUCCESS = "SUCCESS"
    ROLLED_BACK = "ROLLED_BACK"


def seed_cycle(**overrides: Any) -> Mock:
    """A CognitiveCycle mock with exactly the seed's three attributes (no auto-created ones)."""
    cycle = Mock(spec_set=["_detector_config", "_budget_map", "_load_shedder"])
    cycle._detector_config = overrides.get("detector_config", DetectorConfig())
    cycle._budget_map = overrides.get("budget_map", {})
    cycle._load_shedder = overrides.get("load_shedder", Mock(spec_set=["shed"], shed=AsyncMock()))
    return cycle


def seed_orchestrator(outcome: SwapOutcome = SwapOutcome.SUCCESS, detail: str = "swapped") -> Mock:
    """A LiveModuleOrchestrator mock whose orchestrate_swap answers with ``outcome``."""
    orchestrator = Mock(spec_set=["orchestrate_swap"])
    orchestrator.orchestrate_swap = AsyncMock(
        return_value=SimpleNamespace(outcome=outcome, detail=detail)
    )
    return orchestrator


@pytest.fixture
def cycle() -> Mock:
    return seed_cycle()


@pytest.fixture
def orchestrator() -> Mock:
    return seed_orchestrator()


# --- a real RabbitMQ ----------------------------------------------------------------------


def broker_url_or_skip(environ: Mapping[str, str]) -> str:
    """The broker to test against; fail in CI when there is none, skip elsewhere."""
    url, why = discover_broker(environ)
    if url is None:
        if environ.get("CI"):
            pytest.fail(f"CI needs a RabbitMQ broker: {why}", pytrace=False)
        pytest.skip(why)
    return url


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return broker_url_or_skip(os.environ)


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    """A connection for the test and a fresh namespace, deleted afterwards."""
    opened = await Broker.open(amqp_url, f"t{uuid.uuid4().hex[:12]}")
    try:
        yield opened
    finally:
        await opened.close()


@dataclass
class RunningWorker:
    worker: Worker
    stop: asyncio.Event
    task: asyncio.Task[None]
    registry: CollectorRegistry

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def shutdown(self, timeout: float = 60.0) -> None:
        self.stop.set()
        async with asyncio.timeout(timeout):
            await self.task


async def wait_for(condition: Callable[[], object], *, timeout: float = 20.0, what: str) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


WorkerStarter = Callable[..., Awaitable[RunningWorker]]


@pytest.fixture
async def start_worker(amqp_url: str, broker: Broker) -> AsyncIterator[WorkerStarter]:
    """Start in-process workers on the test's namespace; they are stopped after the test."""
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


ServerStarter = Callable[[Subsystems], Awaitable[SubsystemServer]]


@pytest.fixture
async def serve(amqp_url: str, broker: Broker) -> AsyncIterator[ServerStarter]:
    """Start SubsystemServers on the test's namespace; stopped after the test."""
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


def plan_of(*kinds: str, plan_id: str = "p") -> dict[str, object]:
    return {
        "plan_id": plan_id,
        "actions": [
            {"action_id": f"{plan_id}-{i}", "module_name": f"m{i}", "action_kind": kind}
            for i, kind in enumerate(kinds)
        ],
    }


@pytest.fixture(autouse=True)
async def no_worker_process_left() -> AsyncIterator[None]:
    """A test that fails half-way must not leave a worker process consuming behind it."""
    yield
    while WorkerProcess.started:
        process = WorkerProcess.started.pop()
        if process.returncode is None:
            process.kill()
            await process.wait(timeout=10)
