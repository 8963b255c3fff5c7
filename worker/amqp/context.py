"""What every part of the worker process is built from: its settings and wire names, its clock,
its metrics, and the two things only the lifecycle knows (whether it is stopping; how to move
to another broker node)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from schemas.names import Names
from worker.amqp.metrics import WorkerMetrics
from worker.core.clock import Clock
from worker.core.metrics import OptimiserMetrics
from worker.settings import WorkerSettings


@dataclass(frozen=True, slots=True)
class Context:
    settings: WorkerSettings
    names: Names
    clock: Clock
    metrics: WorkerMetrics
    optimiser_metrics: OptimiserMetrics
    #: Whether shutdown has begun: a plan not enacted yet goes back to the queue.
    stopping: Callable[[], bool]
    #: Drop every connection, so each reconnects through the next broker address.
    move_node: Callable[[], Awaitable[None]]
