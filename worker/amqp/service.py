"""The RabbitMQ worker: plans in, one record per action out, review items, bad plans parked.

For each delivery, one place (``_handle``) decides its fate and says why in one log line:

- unreadable (too large, wrong content type or encoding, fails to decode or validate):
  republished to ``N.plans.invalid`` with the reason in ``x-error``, then acked;
- readable: enacted under the optimiser's lock, one record per action published to
  ``N.results``, then acked once the broker has confirmed every record (and, inside
  ``enact()``, every review item);
- a publish the broker did not confirm: the plan is nacked back to the queue (redelivered).

Plans are enacted one at a time, in delivery order; their records are published while the
next plan is enacted, so confirms of several plans are in flight at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import aio_pika
import aiormq
import msgspec
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from prometheus_client import CollectorRegistry

from schemas import (
    EnactmentRecord,
    EnactmentStatus,
    Plan,
    decode_plan,
    decode_record,
    encode,
    routing_key,
)
from schemas.codec import JSON, PLAN_CONTENT_TYPES
from schemas.control import ControlMessage
from schemas.logs import (
    CHECKPOINT_CONTENT_TYPE,
    CHECKPOINT_TYPE,
    RECORD_TYPE,
    decode_checkpoint,
    encode_checkpoint,
)
from schemas.names import Names
from worker.amqp import checkpoints, frames
from worker.amqp.checkpoints import Chain, CheckpointFollower
from worker.amqp.connection import connect
from worker.amqp.consumer import Delivery, PlanConsumer, owned, settle
from worker.amqp.control import ControlFollower, describe
from worker.amqp.errors import BROKER_ERRORS, PublishFailed, StreamUnavailable
from worker.amqp.http import HealthServer
from worker.amqp.metrics import WorkerMetrics
from worker.amqp.outbox import Outbox
from worker.amqp.publisher import PERSISTENT, Outgoing, Publisher
from worker.amqp.remote import RemoteSubsystems
from worker.amqp.review import AmqpReviewSink
from worker.amqp.state import StateFollower, records_in, records_messages
from worker.amqp.streams import StreamFollower, caught_up, offset_at, read_offsets
from worker.amqp.topology import declare, queue_states
from worker.core.clock import Clock, SystemClock
from worker.core.errors import ConfigError, cancelled_here
from worker.core.memory import FlagMemory, RecordMemory
from worker.core.metrics import OptimiserMetrics
from worker.core.optimiser import AsyncSelfOptimiser
from worker.core.planstep import PlanStep
from worker.core.ports import Subsystems
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

_Handle = Callable[[Delivery], Awaitable[None]]

#: Longest ``x-error`` header on a parked plan; msgspec's messages are far shorter.
MAX_ERROR_HEADER: Final = 1000
#: After this many failed fences in a row, the worker moves to another broker node.
MOVE_AFTER_FAILED_FENCES: Final = 3
_ACCEPTED_ENCODINGS: Final = frozenset({"", "identity", "utf-8", "utf8"})
#: Backoff between attempts to publish records the broker did not confirm.
RETRY_FIRST_S: Final = 0.5
RETRY_MAX_S: Final = 10.0
#: The longest the records of a plan wait for those of the plans enacted after it, to go out
#: in one write with them (a plan that waits for a subsystem holds the others up no longer).
GROUP_WAIT_S: Final = 0.002
#: Own records confirmed this long ago and not read back from the state log are looked for.
LOST_AFTER_S: Final = 1.0
#: Checkpoints are read from this long before the state window: the broker's clock, which
#: stamps the stream, may be behind the worker's.
CHECKPOINT_MARGIN_S: Final = 60.0
#: A checkpoint written and not read back within this long was lost by the stream: written
#: again.
CHECKPOINT_READ_BACK_S: Final = 30.0


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
        # Read at scrape time, so the gauge follows a reconnect as /readyz does.
        self.metrics.ready.set_function(lambda: 1.0 if self.readiness()[0] else 0.0)
        self._control: ControlFollower | None = None
        self._followers: list[StreamFollower] = []
        self._consumer: PlanConsumer | None = None
        self._checkpoints: CheckpointFollower | None = None
        self._broker_lost = False
        self.metrics.paused.set_function(lambda: 0.0 if self.paused is None else 1.0)
        self.metrics.paused_since.set_function(
            lambda: 0.0 if self.paused is None else self.paused.paused_since.timestamp()
        )
        self.optimiser_metrics = OptimiserMetrics(registry)
        self._state = "starting"
        self._connections: list[AbstractRobustConnection] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self.turn = asyncio.Lock()  # FIFO: plans are enacted in delivery order
        self._stopping = False
        self.metrics_port: int | None = None

    # --- lifecycle --------------------------------------------------------------------

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
            log.info("metrics and health on %s:%d", self.settings.metrics_host, self.metrics_port)
        try:
            await self._serve(stop)
        finally:
            for connection in reversed(self._connections):
                await _close(connection, self.settings.connect_timeout_s)
            await health.close()

    async def move_node(self) -> None:
        """Drop every connection: each reconnects through the next broker address."""
        for connection in self._connections:
            transport = connection.transport
            if transport is not None:
                with contextlib.suppress(Exception):
                    await transport.connection.close(ConnectionError("moving to another node"))

    async def _serve(self, stop: asyncio.Event) -> None:
        settings = self.settings
        self._state = "connecting to the broker"
        log.info("connecting to %s, namespace %r", settings.safe_url, settings.namespace)
        # Publishers and consumers on separate connections: publish flow control (a blocked
        # connection) must not stall the acks of plans already enacted.
        for role in ("consume", "publish"):
            connection = await _unless_stopped(connect(settings, role), stop)
            if connection is None:
                log.info("stopped before the broker answered")
                return
            self._connections.append(connection)
        consume_connection, publish_connection = self._connections
        # One line of our own each way, whatever the libraries say about the reconnect.
        consume_connection.close_callbacks.add(self._lost)
        consume_connection.reconnect_callbacks.add(self._back)

        consume_channel = await consume_connection.channel()
        await consume_channel.set_qos(prefetch_count=settings.prefetch)
        await declare(
            consume_channel,
            self.names,
            delivery_limit=settings.delivery_limit,
            retention_s=settings.state_retention_s,
            create=settings.declare_topology,
        )
        publish_channel = await publish_connection.channel(
            publisher_confirms=True, on_return_raises=False
        )
        results = await publish_channel.get_exchange(self.names.results_exchange)
        markers = await publish_channel.get_exchange(self.names.markers)
        publisher = Publisher(publish_channel, timeout_s=settings.publish_timeout_s)
        optimiser, flags = await self._optimiser(publish_connection, publish_channel, publisher)

        memory = self._memory(publish_connection)
        follower = StateFollower(memory, optimiser, self.names, clock=self.clock, flags=flags)
        control = ControlFollower(self.names, optimiser)
        checkpoint_exchange = await publish_channel.get_exchange(self.names.checkpoints)
        if not await self._restore(follower, control, markers, checkpoint_exchange, stop):
            return
        self._control = control
        self._followers = [follower, control]

        async def catch_up() -> None:
            await caught_up(markers, [follower, control], settings.fence_timeout_s)

        handler = _PlanHandler(
            self,
            step=PlanStep(optimiser, memory, clock=self.clock, metrics=self.optimiser_metrics),
            publisher=publisher,
            # A quarter of the prefetch a group at most: the plans of the next groups keep
            # coming while one waits for its confirms.
            outbox=Outbox(
                publisher,
                state=functools.partial(records_messages, self.names.notes),
                most=settings.prefetch // 4,
                wait_s=GROUP_WAIT_S,
            ),
            results=results,
            invalid=await publish_channel.get_exchange(self.names.invalid_exchange),
            catch_up=catch_up,
            state=follower,
            followers=[follower, control],
        )

        assert isinstance(consume_channel, AbstractRobustChannel)
        consumer = PlanConsumer(
            consume_channel, self.names.plans_queue, self._track(handler.handle)
        )
        await consumer.start()
        self._consumer = consumer
        self._state = "consuming"
        log.info("consuming %s (prefetch %d)", self.names.plans_queue, settings.prefetch)
        poller = asyncio.create_task(self._poll_queues(consume_connection, stop))
        background = [
            asyncio.create_task(handler.watch_lost()),
            *self._start_checkpoints(handler, follower, publisher, checkpoint_exchange),
        ]
        await stop.wait()

        self._state = "stopping"
        self._stopping = True
        log.info("stopping: no new plans; finishing %d in hand", len(self._handlers))
        # Bounded: with the broker gone, aio-pika would wait for a reconnect first.
        failed = await _attempt(consumer.cancel(), settings.connect_timeout_s)
        if failed is not None:
            log.warning("could not cancel the consumer cleanly: %s", failed)
        await self._drain(settings.shutdown_grace_s)
        await self._end_background(poller, background)
        # Closing the channel returns whatever was prefetched and not acked to the queue.
        await _close(consume_channel, settings.connect_timeout_s)
        await _close(publish_channel, settings.connect_timeout_s)
        self._state = "stopped"
        log.info("stopped")

    async def _end_background(
        self, poller: asyncio.Task[None], background: list[asyncio.Task[None]]
    ) -> None:
        """Once the plans in hand are settled. The poller ends by itself (``stop``): one
        cancelled in a channel's close made the broker close the whole consuming connection
        ("expected 'channel.open'"), and with it the acks of the plans just finished (1 run
        in 7 of the SIGTERM test had a plan enacted and queued again)."""
        for task in background:
            task.cancel()
        # asyncio.wait, not wait_for: what the poller ended with is no reason to stop otherwise.
        await asyncio.wait({poller}, timeout=self.settings.connect_timeout_s)
        poller.cancel()

    def _memory(self, connection: AbstractRobustConnection) -> RecordMemory:
        """The record memory, reading originals back from the state log on ``connection``."""
        settings = self.settings

        async def fetch(offsets: Sequence[int]) -> dict[int, list[EnactmentRecord]]:
            stream, timeout_s = self.names.results_log, settings.fence_timeout_s
            read = await read_offsets(connection, stream, offsets, timeout_s)
            return {offset: records_in(message) for offset, message in read.items()}

        return RecordMemory(
            window_s=settings.dedup_window_s,
            limit=settings.remember_limit,
            clock=self.clock,
            fetch=fetch,
        )

    async def _optimiser(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractChannel,
        publisher: Publisher,
    ) -> tuple[AsyncSelfOptimiser, FlagMemory]:
        """The optimiser, on the subsystem servers (or the ports given) and the review queue."""
        settings = self.settings
        subsystems = self._subsystems
        if subsystems is None:
            remote = await RemoteSubsystems.open(
                connection,
                self.names,
                timeout_s=settings.optimiser.subsystem_timeout_s,
                clock=self.clock,
            )
            subsystems = remote.subsystems()
        flags = FlagMemory(
            window_s=settings.dedup_window_s, limit=settings.remember_limit, clock=self.clock
        )
        review = AmqpReviewSink(
            publisher,
            await channel.get_exchange(self.names.review_exchange),
            notes=await channel.get_exchange(self.names.notes),
            flags=flags,
            patience_s=settings.outage_wait_s,
        )
        optimiser = AsyncSelfOptimiser(
            subsystems=subsystems,
            review=review,
            config=settings.optimiser,
            clock=self.clock,
            metrics=self.optimiser_metrics,
        )
        return optimiser, flags

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

    async def _restore(
        self,
        state: StateFollower,
        control: ControlFollower,
        markers: AbstractExchange,
        checkpoint_exchange: AbstractExchange,
        stop: asyncio.Event,
    ) -> bool:
        """Read the guardrail state and the pause state before consuming; fail closed (and
        retry) if either cannot be read to its end. False if stopped first."""
        settings = self.settings
        delay = 1.0
        while not stop.is_set():
            self._state = "restoring guardrail state"
            since = self.clock.now() - timedelta(seconds=settings.state_window_s)
            followers: list[StreamFollower] = [state, control]
            try:
                # Read on the consuming connection; markers go out on the publishing one, which
                # a resource alarm may block (the reading one must never be).
                reader, start = await self._from_checkpoints(
                    state, markers, checkpoint_exchange, since
                )
                if reader is not None:
                    followers.append(reader)
                await state.follow(self._connections[0], offset=since if start is None else start)
                await control.follow(self._connections[0], offset="first")
                await caught_up(
                    markers, [state, control], settings.state_timeout_s, progress=self._restoring
                )
                control.caught_up()
                log.info(
                    "state restored from %s: %d records since %s, %d action ids remembered",
                    state.stream, state.records_read,
                    since.isoformat(timespec="seconds") if start is None else f"offset {start}",
                    len(state.memory),
                )  # fmt: skip
                self._checkpoints = reader
                return True
            except (StreamUnavailable, *BROKER_ERRORS) as exc:
                for follower in followers:
                    await follower.close()
                why = str(exc)
                if "does not have a replica on the local node" in why:
                    why += (
                        "; connect this worker to a node that holds a replica (`rabbitmqctl "
                        "list_queues name members`), or add one there (`rabbitmq-streams "
                        "add_replica`)"
                    )
                self._state = f"not consuming: guardrail state not restored ({why})"
                log.error("%s; retrying in %.0fs", self._state, delay)
            await _unless_stopped(asyncio.sleep(delay), stop)
            delay = min(delay * 2, 30.0)
        return False

    async def _from_checkpoints(
        self,
        state: StateFollower,
        markers: AbstractExchange,
        exchange: AbstractExchange,
        since: datetime,
    ) -> tuple[CheckpointFollower | None, int | None]:
        """Load the checkpoints of the state window into ``state``: (their follower, the
        offset of the state log to read on from; None: read the window whole)."""
        settings, names = self.settings, self.names
        if settings.checkpoint_records == 0:
            return None, None
        connection = self._connections[0]
        reader = CheckpointFollower(names.checkpoints, Chain(names.results_log))
        try:
            await reader.follow(connection, offset=since - timedelta(seconds=CHECKPOINT_MARGIN_S))
        except aiormq.exceptions.ChannelNotFoundEntity:
            log.warning(
                "stream %s does not exist: the state is read without checkpoints, and none are "
                "written (load this version's definitions: `self-optimiser definitions`)",
                names.checkpoints,
            )
            return None, None
        try:
            await caught_up(exchange, [reader], settings.state_timeout_s, progress=self._restoring)
            lower = await offset_at(
                connection, markers, names.results_log, since, settings.fence_timeout_s
            )
        except BaseException:
            await reader.close()
            raise
        chosen = reader.restored(lower)
        if isinstance(chosen, str):
            log.info("reading the state window of %s whole: %s", names.results_log, chosen)
            return reader, None
        bodies, final = chosen
        del chosen
        try:
            there = await read_offsets(
                connection, names.results_log, [final.last], settings.fence_timeout_s
            )
            found = there[final.last].header.properties.message_id or ""
        except StreamUnavailable as exc:
            found = f"nothing ({exc})"
        if found != final.last_id:
            reader.chain = Chain(names.results_log)
            log.warning(
                "the checkpoints name %r at offset %d of %s, where it holds %s (the stream was "
                "declared anew?): reading the state window whole",
                final.last_id, final.last, names.results_log, found,
            )  # fmt: skip
            return reader, None
        try:
            # Each one decoded (and let go) before any is loaded: a load cut short would leave
            # ids remembered whose records the guards then never learn from the state log.
            guard_records = [decode_record(r) for r in decode_checkpoint(bodies[-1]).guard_records]
            for body in bodies:
                decode_checkpoint(body)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            reader.chain = Chain(names.results_log)
            log.warning("a checkpoint in %s cannot be read (%s): reading the state window of "
                        "%s whole", names.checkpoints, exc, names.results_log)  # fmt: skip
            return reader, None
        ids = 0
        messages = len(bodies)
        bodies.reverse()
        while bodies:  # each body let go once loaded: a million ids are ~50 MB of them
            checkpoint = decode_checkpoint(bodies.pop())
            state.memory.load(checkpoint.ids, checkpoint.offsets, checkpoint.times_ms)
            ids += len(checkpoint.ids)
            if state.flags is not None:
                for action_id, flagged_at in checkpoint.flags:
                    state.flags.remember(action_id, flagged_at)
        state.seed(guard_records)
        log.info(
            "checkpoints of %s up to offset %d loaded: %d messages, %d action ids, %d records "
            "for the guards", names.results_log, final.last, messages, ids, len(guard_records),
        )  # fmt: skip
        return reader, final.last + 1

    def _start_checkpoints(
        self,
        handler: _PlanHandler,
        state: StateFollower,
        publisher: Publisher,
        exchange: AbstractExchange,
    ) -> list[asyncio.Task[None]]:
        reader = self._checkpoints
        if reader is None:
            return []
        reader.on_covered = state.covered
        return [
            asyncio.create_task(
                self._write_checkpoints(handler, state, reader, publisher, exchange)
            )
        ]

    async def _write_checkpoints(
        self,
        handler: _PlanHandler,
        state: StateFollower,
        reader: CheckpointFollower,
        publisher: Publisher,
        exchange: AbstractExchange,
    ) -> None:
        """While this worker enacts plans: a checkpoint of what it read of the state log after
        the last one, every ``checkpoint_records`` records or ``checkpoint_interval_s``."""
        settings, names = self.settings, self.names
        handled, written_at, written_to = handler.handled, time.monotonic(), -1
        while True:
            await asyncio.sleep(1.0)
            pending = len(state.fresh) + len(state.fresh_flags)
            now = time.monotonic()
            if handler.handled == handled or pending == 0 or state.last_offset is None:
                continue  # a standby does not write: the active worker does
            covered = reader.chain.covered
            if covered is not None and covered >= state.last_offset:
                continue  # another worker's checkpoint covers all this one read
            if pending < settings.checkpoint_records and now - written_at < (
                settings.checkpoint_interval_s
            ):
                continue
            unread = written_to >= 0 and (covered is None or covered < written_to)
            if unread and now - written_at < CHECKPOINT_READ_BACK_S:
                continue  # the last one is not read back yet (not read back at all: lost)
            first, ids, last = -1, 0, state.last_offset
            try:
                with state.holding():
                    for message in checkpoints.write(
                        names.results_log,
                        covered,
                        first_read=state.first_offset or 0,
                        last=last,
                        last_id=state.last_id,
                        index=state.fresh,
                        flags=state.fresh_flags,
                        guard_records=state.learnt_from(),
                    ):
                        first = message.first if first < 0 else first
                        ids += len(message.ids)
                        routed = await publisher.publish_body(
                            exchange.name,
                            "",
                            encode_checkpoint(message),
                            _CHECKPOINT_PROPERTIES,
                        )
                        if not routed:
                            raise PublishFailed(f"nothing is bound to exchange {exchange.name}")
            except (PublishFailed, *BROKER_ERRORS) as exc:
                log.warning("a checkpoint of %s was not confirmed (%s); trying again later",
                            names.results_log, exc or type(exc).__name__)  # fmt: skip
                continue
            handled, written_at, written_to = handler.handled, now, last
            log.info(
                "checkpoint of %s, offsets %d to %d: %d action ids, %d records for the guards",
                names.results_log, first, last, ids, len(message.guard_records),
            )  # fmt: skip

    def _restoring(self, read: int, seconds: float) -> None:
        """A restore still under way: say how far it got, in the log and on ``/readyz``."""
        self._state = (
            f"restoring guardrail state: {read:,} messages read in {seconds:.0f}s "
            f"({read / max(seconds, 1e-3):,.0f}/s)"
        )
        log.info("%s", self._state)

    async def _poll_queues(self, connection: AbstractRobustConnection, stop: asyncio.Event) -> None:
        """Keep the queue gauges current until ``stop``. A poll that fails or hangs (the broker
        is away) drops them: a frozen gauge would show a queue as it was minutes ago (alert on
        the broker's own metrics, which hold while the worker is away)."""
        period = self.settings.queue_poll_s
        while period > 0 and not stop.is_set():
            states = None
            try:
                async with asyncio.timeout(max(period, 5.0)):
                    states = await queue_states(connection, self.names.watched)
            except asyncio.CancelledError as exc:
                # aiormq hands a connection's own cancelled reader to whoever opens a channel
                # on it while it closes (CI saw it end the poller at shutdown): not ours.
                if cancelled_here():
                    raise
                log.debug("queue poll failed: the connection was closing (%r)", exc)
            except BROKER_ERRORS as exc:
                log.debug("queue poll failed: %s", exc)
            if states is None:
                self.metrics.queue_messages.clear()
                self.metrics.queue_consumers.clear()
            else:
                for label, state in states.items():
                    if state is not None:
                        self.metrics.queue_messages.labels(label).set(state.messages)
                        self.metrics.queue_consumers.labels(label).set(state.consumers)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)

    def _track(self, handle: _Handle) -> Callable[[Delivery], None]:
        """Start ``handle`` for each delivery in a task of its own, which shutdown waits for:
        a plan in hand is finished whatever happens to its channel (a lost connection, the
        broker's consumer timeout; its ack then fails and the broker redelivers it)."""

        def track(message: Delivery) -> None:
            task = asyncio.create_task(_guarded(handle, message))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

        return track

    async def _drain(self, grace_s: float) -> None:
        if not self._handlers:
            return
        _, late = await asyncio.wait(set(self._handlers), timeout=grace_s)
        if late:
            log.warning(
                "%d plan(s) still in hand after %gs; they return to the queue", len(late), grace_s
            )
            for task in late:
                task.cancel()
            await asyncio.wait(late)

    @property
    def stopping(self) -> bool:
        return self._stopping


class _PlanHandler:
    """Decides the fate of each delivered plan (see the module docstring)."""

    def __init__(
        self,
        worker: Worker,
        *,
        step: PlanStep,
        publisher: Publisher,
        outbox: Outbox,
        results: AbstractExchange,
        invalid: AbstractExchange,
        catch_up: Callable[[], Awaitable[None]],
        state: StateFollower,
        followers: list[StreamFollower],
    ) -> None:
        self._worker = worker
        self._step = step
        self._catch_up = catch_up
        self._followers = followers
        self._state = state
        self._invalid = invalid
        self._publisher = publisher
        self._outbox = outbox
        self._results = results
        self._names = worker.names
        self._settings = worker.settings
        self._metrics = worker.metrics
        self.handled = 0  # plans enacted: the worker that enacts writes the checkpoints
        self._fenced_on: object = None  # the channel of the last fence, and when it started
        self._fenced_at = -math.inf

    async def handle(self, message: Delivery) -> None:
        started = time.perf_counter()
        arrived = time.monotonic()
        try:
            plan = self._read(message)
        except _Unreadable as unreadable:
            await self._park(message, unreadable.kind, unreadable.reason)
            return
        with self._outbox.holding():
            records = await self._enact(plan, message, arrived)
        if records is None:
            return
        # The actions are enacted: their records must go out, however long the broker takes.
        # Nacking would have the plan enacted again.
        unroutable = await self._publish_until_confirmed(plan.plan_id, records)
        acked = await settle(message, requeue=None)
        elapsed = time.perf_counter() - started
        self._metrics.plans_consumed.labels("acked" if acked else "requeued").inc()
        self._metrics.plan_duration.observe(elapsed)
        counts = Counter(r.status.value for r in records)
        replayed = sum(1 for r in records if r.replay)
        if replayed:
            self._metrics.actions_replayed.inc(replayed)
        log.info(
            "plan %s: %d actions in %.1f ms: %s%s%s%s",
            plan.plan_id, len(plan.actions), elapsed * 1000,
            ", ".join(f"{s.value} {counts[s.value]}" for s in EnactmentStatus if counts[s.value]),
            f"; {replayed} replayed (enacted before)" if replayed else "",
            f"; {unroutable} record(s) unroutable" if unroutable else "",
            "" if acked else "; ack lost with the channel, the broker will redeliver it",
        )  # fmt: skip

    async def _enact(
        self, plan: Plan, message: Delivery, arrived: float
    ) -> list[EnactmentRecord] | None:
        """The plan's records, its turn come and its fence passed; None if it is not enacted
        here (stopping, the delivery lost, its originals unreadable: settled already)."""
        async with self._worker.turn:
            if message.redelivered:
                count = (message.header.properties.headers or {}).get("x-delivery-count", "?")
                log.info("plan %s redelivered (delivery count %s)", plan.plan_id, count)
                # The worker that had it may have enacted part of it, its records still in
                # flight (its node failed under them); they are resent once it reconnects.
                await asyncio.sleep(arrived + self._settings.takeover_wait_s - time.monotonic())
            if self._worker.stopping:
                await settle(message, requeue=True)
                self._metrics.plans_consumed.labels("requeued").inc()
                return None
            if not await self._fenced(plan.plan_id, message):
                return None
            self.handled += 1
            try:
                records = await self._step.run(plan, owned=lambda: owned(message))
            except StreamUnavailable as exc:
                log.warning(
                    "plan %s: the records of its actions enacted before could not be read back "
                    "(%s); nothing enacted, it returns to the queue in 1s", plan.plan_id, exc,
                )  # fmt: skip
                await asyncio.sleep(1.0)
                await settle(message, requeue=True)
                self._metrics.plans_consumed.labels("requeued").inc()
                return None
        return records

    async def _fenced(self, plan_id: str, message: Delivery) -> bool:
        """A fence for this plan, unless one serves already: a fence started less than
        ``fence_reuse_s`` ago, on the channel this plan came on, serves the plans delivered
        there that are not redeliveries. Once a consumer is active on a channel, the broker
        gives nobody else the plans (single active consumer): what a fence proves for one plan
        holds for the next until another consumer can have taken over, which takes a lost
        channel (a new one fences first), a redelivery (fenced, after ``takeover_wait_s``),
        or a node declared down, seconds at the least (the bound)."""
        channel = message.channel if owned(message) else None
        started = time.monotonic()
        if (
            not message.redelivered
            and channel is not None
            and channel is self._fenced_on
            and started - self._fenced_at < self._settings.fence_reuse_s
        ):
            return True
        if not await self._fence(plan_id, message):
            return False
        self._fenced_on, self._fenced_at = channel, started
        return True

    async def _fence(self, plan_id: str, message: Delivery) -> bool:
        """Before a plan is enacted: read both state streams up to a marker of this worker's.

        That proves the broker still hears this worker, and that every record another worker
        (or this one, before a reconnect) wrote before now is known, so nothing it enacted is
        enacted again. Own records that should have been read back by then and were not were
        lost by the stream: they are published again. Slower than ``fence_timeout_s``: nothing
        is enacted, and the fence is tried again while the delivery is still this worker's;
        False once it is not (the broker gives the plan to whoever consumes now).
        """
        delay, failed = RETRY_FIRST_S, 0
        while True:
            started = time.monotonic()
            try:
                await self._catch_up()
            except (StreamUnavailable, *BROKER_ERRORS) as exc:
                if not owned(message):
                    log.warning("plan %s: delivery lost while reading the state; not enacted",
                                plan_id)  # fmt: skip
                    return False
                if self._worker.stopping:
                    await settle(message, requeue=True)
                    return False
                log.warning(
                    "plan %s: the state streams were not read up to now (%s); not enacting it "
                    "yet, reading them again and trying again in %.1fs", plan_id, exc, delay,
                )  # fmt: skip
                failed += 1
                await self._reconsume(failed)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            await self._resend_lost(plan_id, before=started)
            return True

    async def _resend_lost(self, plan_id: str, *, before: float) -> None:
        """Once a marker published at ``before`` is read back: own records confirmed before
        it and still not read were lost by the stream; publish them again."""
        lost = self._state.lost(before=before)
        if lost:
            self._metrics.records_resent.inc(len(lost))
            log.warning(
                "%d record(s) this worker published are missing from %s (the stream lost "
                "them); writing them to it again",
                len(lost), self._names.results_log,
            )  # fmt: skip
            await self._publish_until_confirmed(plan_id, [], lost)

    async def watch_lost(self) -> None:
        """Own records confirmed more than ``LOST_AFTER_S`` ago and not read back are looked
        for at once (a catch-up without a plan), not only at the next plan's fence, which a
        fence that serves several plans makes rarer."""
        while True:
            await asyncio.sleep(LOST_AFTER_S)
            if not self._state.overdue(time.monotonic() - LOST_AFTER_S):
                continue
            async with self._worker.turn:
                started = time.monotonic()
                try:
                    await self._catch_up()
                except (StreamUnavailable, *BROKER_ERRORS):
                    failed = True
                    self._fenced_on = None  # the next plan fences: it says why, and recovers
                else:
                    failed = False
                    await self._resend_lost("(none)", before=started)
            if failed:
                await asyncio.sleep(self._settings.fence_timeout_s)

    async def _reconsume(self, failed: int) -> None:
        if failed % MOVE_AFTER_FAILED_FENCES == 0:
            # Seen on a cluster: after the stream leader's node came back, the replica on this
            # node delivered nothing more to any consumer of ours. Another node's replica does.
            log.warning(
                "%d fences in a row failed: reconnecting through the next broker address", failed
            )
            await self._worker.move_node()
            return
        for follower in self._followers:
            try:
                await follower.reconsume()
            except BROKER_ERRORS as exc:
                log.warning("could not consume %s again: %s", follower.stream, exc)

    def _read(self, message: Delivery) -> Plan:
        properties = message.header.properties
        where = frames.unreadable(message.routing_key, properties)
        if where:
            raise _Unreadable(
                "unreadable_properties", f"bytes that are not UTF-8 in the {'; the '.join(where)}"
            )
        limit = self._settings.max_plan_bytes
        if len(message.body) > limit:
            raise _Unreadable("too_large", f"body of {len(message.body)} bytes exceeds {limit}")
        content_type = (properties.content_type or JSON).split(";")[0].strip().lower()
        if content_type not in PLAN_CONTENT_TYPES:
            expected = ", ".join(sorted(PLAN_CONTENT_TYPES))
            raise _Unreadable(
                "content_type", f"content type {content_type!r} is not one of {expected}"
            )
        encoding = (properties.content_encoding or "").strip().lower()
        if encoding not in _ACCEPTED_ENCODINGS:
            raise _Unreadable("content_encoding", f"content encoding {encoding!r} is not read")
        try:
            return decode_plan(message.body, content_type)
        except msgspec.DecodeError as exc:
            kind = "invalid" if isinstance(exc, msgspec.ValidationError) else "malformed"
            raise _Unreadable(kind, str(exc)) from None
        except Exception as exc:  # RecursionError for deep nesting, and whatever else a body does
            raise _Unreadable("malformed", f"{type(exc).__name__}: {exc}") from None

    async def _publish_until_confirmed(
        self,
        plan_id: str,
        records: list[EnactmentRecord],
        state: list[EnactmentRecord] | None = None,
    ) -> int:
        """Publish ``records`` to ``N.results`` and ``state`` (by default the records that are
        not replays) to the state log, retrying what the broker did not confirm with backoff;
        return how many records reached no queue on ``N.results``."""
        if state is None:
            state = [r for r in records if not r.replay]
        self._state.expect_back(state)
        unroutable, delay = 0, RETRY_FIRST_S
        while True:
            failed, state_failed, returned = await self._publish_records(records, state)
            unroutable += returned
            if state and state_failed is None:
                self._state.confirmed(state, time.monotonic())
            if not failed and state_failed is None:
                return unroutable
            self._metrics.publish_failures.labels("results").inc()
            reasons = [str(o) for _, o in failed] + [str(state_failed)] * bool(state_failed)
            log.warning(
                "plan %s: %d record(s) not confirmed%s (%s); retrying in %.1fs",
                plan_id, len(failed), " nor the state log's message" if state_failed else "",
                reasons[0], delay,
            )  # fmt: skip
            records = [r for r, _ in failed]
            state = state if state_failed is not None else []
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _publish_records(
        self, records: list[EnactmentRecord], state: list[EnactmentRecord]
    ) -> tuple[list[tuple[EnactmentRecord, PublishFailed]], PublishFailed | None, int]:
        """One attempt: the records not confirmed on ``N.results`` (with why), why the state
        log's message was not (None: it was, or none was asked), and how many records no queue
        was bound to receive."""
        bodies = {id(r): encode(r) for r in (*records, *state)}
        exchange = self._results.name
        sent = await self._outbox.publish(
            [
                Outgoing(exchange, routing_key(r), bodies[id(r)], _record_properties(r))
                for r in records
            ],
            [bodies[id(r)] for r in state],
        )
        went = list(zip(records, sent.outcomes, strict=True))
        failed = [(r, o) for r, o in went if isinstance(o, PublishFailed)]
        unroutable = [r for r, routed in went if routed is False]
        if unroutable:
            self._metrics.records_unroutable.inc(len(unroutable))
            log.error(
                "%d record(s) of plan %s reached no queue (first routing key %r): nobody is "
                "bound to %s to receive them",
                len(unroutable), unroutable[0].plan_id, routing_key(unroutable[0]),
                self._names.results_exchange,
            )  # fmt: skip
        state_failed = sent.state if isinstance(sent.state, PublishFailed) else None
        if sent.state is False:
            # The state log is not bound: the records would not survive a restart, and a
            # redelivery would enact them again. The plan stays in hand until it is back.
            self._metrics.records_unroutable.inc(len(state))
            log.error(
                "the state log's message for %d record(s) reached no queue: %s is not bound "
                "to %s; holding the plans until it is",
                len(state), self._names.results_log, self._names.notes,
            )  # fmt: skip
            state_failed = PublishFailed(f"nothing is bound to exchange {self._names.notes}")
        return failed, state_failed, len(unroutable)

    async def _park(self, message: Delivery, kind: str, reason: str) -> None:
        """Move an unreadable plan to ``N.plans.invalid``, body intact, reason in ``x-error``.

        Bytes that are not UTF-8 cannot be encoded again as they came: names and strings go
        as ``frames.shown`` writes them, the routing key and message id also as their bytes
        (``x-original-routing-key-bytes``, ``x-original-message-id-bytes``).
        """
        properties = message.header.properties
        headers = _encodable(properties.headers or {})
        routing_key, message_id = message.routing_key or "", properties.message_id or ""
        content_type, content_encoding = properties.content_type, properties.content_encoding
        if kind == "unreadable_properties":
            headers = frames.readable(headers)
            headers["x-original-routing-key-bytes"] = bytearray(frames.raw(routing_key))
            headers["x-original-message-id-bytes"] = bytearray(frames.raw(message_id))
            routing_key, message_id = frames.shown(routing_key), frames.shown(message_id)
            content_type = frames.readable(content_type)
            content_encoding = frames.readable(content_encoding)
        headers.update(
            {
                "x-error": reason[:MAX_ERROR_HEADER],
                "x-error-kind": kind,
                "x-original-exchange": message.exchange or "",
                "x-original-routing-key": routing_key,
                "x-original-message-id": message_id,
                "x-parked-at": datetime.now(UTC).isoformat(),
            }
        )
        parked = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=content_type,
            content_encoding=content_encoding,
            delivery_mode=PERSISTENT,
            # A fresh id: returns are matched by message_id, and the planner's may repeat.
            message_id=f"parked-{message.delivery_tag}-{time.monotonic_ns()}",
            timestamp=properties.timestamp,
        )
        try:
            routed = await self._publisher.publish(self._invalid, "", parked)
            if not routed:
                raise PublishFailed(f"queue {self._names.invalid_queue!r} does not exist")
        except PublishFailed as exc:
            self._metrics.publish_failures.labels("invalid").inc()
            self._metrics.plans_consumed.labels("requeued").inc()
            log.error("unreadable plan could not be parked; it returns to the queue in 1s: %s", exc)
            await asyncio.sleep(1.0)
            await settle(message, requeue=True)
            return
        await settle(message, requeue=None)
        self._metrics.plans_parked.labels(kind).inc()
        self._metrics.plans_consumed.labels("parked").inc()
        log.warning("plan parked in %s (%s): %s", self._names.invalid_queue, kind, reason[:300])


class _Unreadable(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _encodable(headers: Mapping[str, object]) -> dict[str, Any]:
    """The headers as they came, in a form the client encodes again.

    A long string that is not UTF-8 arrives as ``bytes``, which pamqp will not encode: it goes
    back as a byte array (type ``x``, the same bytes). Lists and tables are walked. A 64-bit
    float (``d``, what Node.js's amqplib sends) goes back as pamqp encodes every float, 32-bit
    (``f``): the one change, written in the README.
    """
    return {key: _intact(value) for key, value in headers.items()}


def _intact(value: object) -> Any:
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {key: _intact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_intact(item) for item in value]
    return value


def _record_properties(record: EnactmentRecord) -> aiormq.spec.Basic.Properties:
    # ``replay`` in a header too: the state follower tells a replay from the original
    # without decoding the body.
    headers: dict[str, Any] = {"plan_id": record.plan_id}
    if record.replay:
        headers["replay"] = True
    return aiormq.spec.Basic.Properties(
        content_type=JSON,
        delivery_mode=PERSISTENT,
        message_id=record.action.action_id,
        message_type=RECORD_TYPE,
        headers=headers,
    )


_CHECKPOINT_PROPERTIES: Final = aiormq.spec.Basic.Properties(
    content_type=CHECKPOINT_CONTENT_TYPE,
    delivery_mode=PERSISTENT,
    message_type=CHECKPOINT_TYPE,
)


async def _guarded(handle: _Handle, message: Delivery) -> None:
    """Run ``handle``; a bug in it returns the delivery to the queue instead of stranding it."""
    try:
        await handle(message)
    except asyncio.CancelledError:
        if cancelled_here():
            raise  # shutdown cancelled it: the delivery returns with the channel
        # A channel dropped under it (errors.cancelled_here): must not strand the delivery.
        log.error("handling delivery %s was cut short by a closed channel; it returns to the "
                  "queue", message.delivery_tag)  # fmt: skip
        await settle(message, requeue=True)
    except Exception:
        log.exception("unexpected error handling delivery %s; it returns to the queue in 1s",
                      message.delivery_tag)  # fmt: skip
        await asyncio.sleep(1.0)  # not a tight loop if the same plan fails the same way
        await settle(message, requeue=True)


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
