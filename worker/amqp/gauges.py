"""The queue gauges: how many messages wait in the queues people watch, and who consumes them,
read from the broker every ``queue_poll_s``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aio_pika.abc import AbstractRobustConnection

from schemas.names import Names
from worker.amqp.errors import BROKER_ERRORS
from worker.amqp.metrics import WorkerMetrics
from worker.amqp.topology import queue_states
from worker.core.errors import cancelled_here

log = logging.getLogger(__name__)

#: The longest one poll may take, whatever the period.
POLL_TIMEOUT_S = 5.0


async def poll_queues(
    connection: AbstractRobustConnection,
    names: Names,
    metrics: WorkerMetrics,
    *,
    period_s: float,
    stop: asyncio.Event,
) -> None:
    """Keep the queue gauges current until ``stop``. A poll that fails or hangs (the broker is
    away) drops them: a frozen gauge would show a queue as it was minutes ago (alert on the
    broker's own metrics, which hold while the worker is away)."""
    while period_s > 0 and not stop.is_set():
        states = None
        try:
            async with asyncio.timeout(max(period_s, POLL_TIMEOUT_S)):
                states = await queue_states(connection, names.watched)
        except asyncio.CancelledError as exc:
            # aiormq hands a connection's own cancelled reader to whoever opens a channel on it
            # while it closes (CI saw it end the poller at shutdown): not ours.
            if cancelled_here():
                raise
            log.debug("queue poll failed: the connection was closing (%r)", exc)
        except BROKER_ERRORS as exc:
            log.debug("queue poll failed: %s", exc)
        if states is None:
            metrics.queue_messages.clear()
            metrics.queue_consumers.clear()
        else:
            for label, state in states.items():
                if state is not None:
                    metrics.queue_messages.labels(label).set(state.messages)
                    metrics.queue_consumers.labels(label).set(state.consumers)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period_s)
