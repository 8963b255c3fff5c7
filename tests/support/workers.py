"""In-process workers and subsystem servers, as the ``start_worker`` and ``serve`` fixtures
give them to a test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from worker import Subsystems
from worker.amqp.worker import Worker
from worker.subsystems.server import SubsystemServer


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


WorkerStarter = Callable[..., Awaitable[RunningWorker]]

ServerStarter = Callable[[Subsystems], Awaitable[SubsystemServer]]
