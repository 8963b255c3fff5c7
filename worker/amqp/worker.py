"""The RabbitMQ worker: plans in, one record per action out, review items, bad plans parked.

``run`` is a lifecycle, as uvicorn's server is: ``startup`` (connect, declare, build the parts,
restore the state), ``main_loop`` (consume until ``stop``, with the watchers beside it) and
``shutdown`` (no new plans, the ones in hand finished, the watchers ended, the channels
closed). What becomes of each delivery is the plan handler's (``worker.amqp.plans``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from prometheus_client import CollectorRegistry

from schemas.control import ControlMessage
from schemas.names import Names
from worker.amqp import wiring
from worker.amqp.checkpointing import CheckpointWriter
from worker.amqp.checkpoints import CheckpointFollower
from worker.amqp.connection import connect
from worker.amqp.consumer import PlanConsumer
from worker.amqp.context import Context
from worker.amqp.control import ControlFollower, describe
from worker.amqp.errors import BROKER_ERRORS
from worker.amqp.gauges import poll_queues
from worker.amqp.http import HealthServer
from worker.amqp.metrics import WorkerMetrics
from worker.amqp.restore import Restore
from worker.amqp.streams import StreamFollower
from worker.core.clock import Clock, SystemClock
from worker.core.errors import ConfigError, cancelled_here
from worker.core.metrics import OptimiserMetrics
from worker.core.ports import Subsystems
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class Worker:
    """Consumes ``N.plans`` until ``stop`` is set, then drains and closes cleanly."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        registry: CollectorRegistry,
        subsystems: Subsystems | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self._registry = registry
        self._subsystems = subsystems  # None: the subsystem servers, over AMQP
        self.clock: Clock = clock or SystemClock()
        self.metrics = WorkerMetrics(registry)
        self.optimiser_metrics = OptimiserMetrics(registry)
        # Read at scrape time, so the gauges follow a reconnect as /readyz does.
        self.metrics.ready.set_function(lambda: 1.0 if self.readiness()[0] else 0.0)
        self.metrics.paused.set_function(lambda: 0.0 if self.paused is None else 1.0)
        self.metrics.paused_since.set_function(
            lambda: 0.0 if self.paused is None else self.paused.paused_since.timestamp()
        )
        self._state = "starting"
        self._stopping = False
        self._broker_lost = False
        self._connections: list[AbstractRobustConnection] = []
        self._control: ControlFollower | None = None
        self._followers: tuple[StreamFollower, ...] = ()
        self._consumer: PlanConsumer | None = None
        self._checkpoints: CheckpointFollower | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._poller: asyncio.Task[None] | None = None
        self.metrics_port: int | None = None

    def readiness(self) -> tuple[bool, str]:
        """(ready, why), for ``/readyz``: ready while consuming over live connections."""
        if self._state != "consuming":
            return False, self._state
        down = [c for c in self._connections if not c.connected.is_set()]
        if down:
            return False, "reconnecting to the broker"
        blind = [f.stream for f in self._followers if not f.healthy]
        if blind:
            return False, f"not reading {', '.join(blind)}: consuming it again"
        if self._consumer is not None and not self._consumer.consuming:
            return False, f"not consuming {self.names.plans_queue}: consuming it again"
        if self.paused is not None:
            return True, f"consuming plans; {describe(self.paused)}"
        return True, "consuming plans"

    @property
    def paused(self) -> ControlMessage | None:
        """The operators' pause in force, once the control stream has been read."""
        return None if self._control is None else self._control.paused

    @property
    def followers(self) -> tuple[StreamFollower, ...]:
        """The state streams followed (the state log first), once restored."""
        return self._followers

    def stopping(self) -> bool:
        """Whether shutdown has begun: no plan is enacted any more."""
        return self._stopping

    # --- the lifecycle ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; raises ``OptimiserError`` subclasses on fatal errors."""
        health = HealthServer(self._registry, self.readiness)
        if self.settings.metrics_port >= 0:
            host, port = self.settings.metrics_host, self.settings.metrics_port
            try:
                self.metrics_port = await health.start(host, port)
            except OSError as exc:
                raise ConfigError(
                    f"cannot serve metrics on {host}:{port}: {exc.strerror} "
                    f"(set OPTIMISER_METRICS_PORT to a free port, or -1 for none)"
                ) from None
            log.info("metrics and health on %s:%d", host, self.metrics_port)
        try:
            parts = await self.startup(stop)
            if parts is not None:
                await self.main_loop(parts, stop)
                await self.shutdown(parts)
        finally:
            for connection in reversed(self._connections):
                await _close(connection, self.settings.connect_timeout_s)
            await health.close()

    async def startup(self, stop: asyncio.Event) -> wiring.Parts | None:
        """Connected, declared, built and restored; None if ``stop`` came first."""
        settings = self.settings
        self._state = "connecting to the broker"
        log.info("connecting to %s, namespace %r", settings.safe_url, settings.namespace)
        for role in ("consume", "publish"):
            connection = await _unless_stopped(connect(settings, role), stop)
            if connection is None:
                log.info("stopped before the broker answered")
                return None
            self._connections.append(connection)
        consuming, publishing = self._connections
        # One line of our own each way, whatever the libraries say about the reconnect.
        consuming.close_callbacks.add(self._lost)
        consuming.reconnect_callbacks.add(self._back)
        context = Context(
            settings=settings,
            names=self.names,
            clock=self.clock,
            metrics=self.metrics,
            optimiser_metrics=self.optimiser_metrics,
            stopping=self.stopping,
            move_node=self.move_node,
        )
        parts = await wiring.build(context, consuming, publishing, self._subsystems)
        restore = Restore(
            context, consuming, markers=parts.markers, checkpoint_exchange=parts.checkpoints,
            say=self._say,
        )  # fmt: skip
        restored = await restore.run(parts.state, parts.control, stop)
        if restored is None:
            return None
        self._control = parts.control
        self._followers = (parts.state, parts.control)
        self._checkpoints = restored.checkpoints
        return parts

    async def main_loop(self, parts: wiring.Parts, stop: asyncio.Event) -> None:
        """Consume plans until ``stop``; the lost-record watcher and the gauges beside."""
        consumer = PlanConsumer(
            parts.consume_channel, self.names.plans_queue, parts.handler.deliver
        )
        await consumer.start()
        self._consumer = consumer
        self._state = "consuming"
        log.info("consuming %s (prefetch %d)", self.names.plans_queue, self.settings.prefetch)
        self._poller = asyncio.create_task(
            poll_queues(
                self._connections[0], self.names, self.metrics,
                period_s=self.settings.queue_poll_s, stop=stop,
            )
        )  # fmt: skip
        self._watchers.append(asyncio.create_task(parts.handler.watch_lost()))
        if self._checkpoints is not None:
            writer = CheckpointWriter(
                parts.context,
                self._checkpoints,
                parts.publisher,
                state=parts.state,
                handled=lambda: parts.handler.handled,
            )
            self._watchers.append(asyncio.create_task(writer.run()))
        await stop.wait()

    async def shutdown(self, parts: wiring.Parts) -> None:
        """No new plans; those in hand finished (within the grace), then everything closed."""
        settings = self.settings
        self._state = "stopping"
        self._stopping = True
        log.info("stopping: no new plans; finishing %d in hand", parts.handler.in_hand)
        if self._consumer is not None:
            # Bounded: with the broker gone, aio-pika would wait for a reconnect first.
            failed = await _attempt(self._consumer.cancel(), settings.connect_timeout_s)
            if failed is not None:
                log.warning("could not cancel the consumer cleanly: %s", failed)
        await parts.handler.drain(settings.shutdown_grace_s)
        await self._end_watchers()
        # Closing the channel returns whatever was prefetched and not acked to the queue.
        await _close(parts.consume_channel, settings.connect_timeout_s)
        await _close(parts.publish_channel, settings.connect_timeout_s)
        self._state = "stopped"
        log.info("stopped")

    async def _end_watchers(self) -> None:
        """Once the plans in hand are settled. The poller ends by itself (``stop``): one
        cancelled in a channel's close made the broker close the whole consuming connection
        ("expected 'channel.open'"), and with it the acks of the plans just finished (1 run
        in 7 of the SIGTERM test had a plan enacted and queued again)."""
        for task in self._watchers:
            task.cancel()
        if self._poller is not None:
            # asyncio.wait, not wait_for: what the poller ended with is no reason to stop.
            await asyncio.wait({self._poller}, timeout=self.settings.connect_timeout_s)
            self._poller.cancel()

    # --- the broker's comings and goings ------------------------------------------------

    async def move_node(self) -> None:
        """Drop every connection: each reconnects through the next broker address."""
        for connection in self._connections:
            transport = connection.transport
            if transport is not None:
                with contextlib.suppress(Exception):
                    await transport.connection.close(ConnectionError("moving to another node"))

    def _say(self, state: str) -> None:
        self._state = state

    def _lost(self, _connection: object, exc: BaseException | None = None) -> None:
        if self._stopping or exc is None or self._broker_lost:
            return  # our own close, or said already
        self._broker_lost = True
        log.warning(
            "lost the broker at %s (%s): not consuming plans until it is back; plans in hand "
            "go back to the queue", self.settings.safe_url, exc or "connection closed",
        )  # fmt: skip

    def _back(self, _connection: object) -> None:
        self._broker_lost = False
        log.info("the broker at %s is back: consuming plans again", self.settings.safe_url)


async def _close(closable: AbstractChannel | AbstractRobustConnection, timeout_s: float) -> None:
    failed = await _attempt(closable.close(), timeout_s)
    if failed is not None:
        log.debug("close %r: %s", closable, failed)


async def _attempt(step: Awaitable[object], timeout_s: float) -> str | None:
    """Run a step of shutting down within ``timeout_s``; None, or why it failed. A broker
    link that fails under it (at shutdown, the connection may be dying) is no reason to
    stop shutting down: CI saw aiormq's CancelledError from a connection declared dead by
    heartbeat end a SIGTERM'd worker with a traceback."""
    try:
        async with asyncio.timeout(timeout_s):
            await step
    except asyncio.CancelledError:
        if cancelled_here():
            raise
        return "the connection closed under it"
    except BROKER_ERRORS as exc:
        return str(exc) or type(exc).__name__
    return None


T = TypeVar("T")


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``work``'s result, or None (and ``work`` cancelled) if ``stop`` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
