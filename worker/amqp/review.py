"""FLAG_FOR_REVIEW over AMQP.

The worker's side (``AmqpReviewSink``): one persistent message per action, through exchange
``N.review`` to the queue of the same name. The operators' side (``ReviewDesk``): look at the
pending items, ack the ones dealt with, send one to the back of the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import aio_pika
import aiormq
import msgspec
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from schemas import ImprovementAction, decode_action, encode
from schemas.codec import JSON
from worker.amqp.publisher import PERSISTENT, Publisher
from worker.amqp.topology import Names, queue_states
from worker.core.clock import Clock
from worker.core.errors import OptimiserError, PlanLost
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class ReviewUndeliverable(OptimiserError):
    """The review queue does not exist: the broker returned the item."""


#: The type of the state log's note that an action was flagged (and when), written before
#: the item itself: the review queue cannot drop a repeat, so the next worker to enact the
#: action must learn from the log when it was flagged, and send that same item again.
FLAGGED_TYPE: Final = "review_flagged"


class FlagMemory:
    """When each action was flagged for review, by ``action_id``, for ``window_s`` (at most
    ``limit`` of them): learnt from the state log, and from this worker's own flags."""

    def __init__(self, *, window_s: float, limit: int, clock: Clock) -> None:
        self._window = timedelta(seconds=window_s)
        self._limit = limit
        self._clock = clock
        self._flagged: OrderedDict[str, datetime] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flagged)

    def get(self, action_id: str) -> datetime | None:
        return self._flagged.get(action_id)

    def remember(self, action_id: str, flagged_at: datetime) -> None:
        """The first flag of an action is the one kept."""
        self._flagged.setdefault(action_id, flagged_at)
        oldest_kept = self._clock.now() - self._window
        while self._flagged:
            first = next(iter(self._flagged.values()))
            if len(self._flagged) <= self._limit and first >= oldest_kept:
                break
            self._flagged.popitem(last=False)

    def learn(self, properties: aiormq.spec.Basic.Properties) -> tuple[str, datetime] | None:
        """Take in a ``FLAGGED_TYPE`` note read from the state log: (action id, when), or None
        for a note that is not one."""
        headers = properties.headers or {}
        action_id, flagged_at = headers.get("action_id"), headers.get("flagged_at")
        if not isinstance(action_id, str) or not isinstance(flagged_at, str):
            log.warning("a review note without an action id or a time; ignored")
            return None
        try:
            when = datetime.fromisoformat(flagged_at)
        except ValueError:
            log.warning("a review note with a time that is not one (%r); ignored", flagged_at)
            return None
        self.remember(action_id, when)
        return action_id, when


class AmqpReviewSink:
    """Publishes the action to ``exchange`` and returns once the broker has confirmed it.

    ``message_id`` is the action's ``action_id`` and the ``flagged_at`` header says when it
    was flagged, so a reader tells a copy (same pair) from a second flag. Before the item, a
    note with the same time goes to the state log (through exchange ``notes``); the item then
    goes out only while the plan is still this worker's. A worker that takes the plan over
    finds the note and sends the same item again: a copy, never a second flag.
    """

    def __init__(
        self,
        publisher: Publisher,
        exchange: AbstractExchange,
        *,
        notes: AbstractExchange,
        flags: FlagMemory,
        patience_s: float | None = None,
    ) -> None:
        self._publisher = publisher
        self._exchange = exchange
        self._notes = notes
        self._flags = flags
        self._patience_s = patience_s  # how long an item waits out a broker outage

    async def submit(
        self,
        action: ImprovementAction,
        *,
        plan_id: str,
        proceed: Callable[[], bool] | None = None,
    ) -> None:
        flagged_at = self._flags.get(action.action_id)
        if flagged_at is None:
            flagged_at = datetime.now(UTC)
            await self._note(action, plan_id, flagged_at)
        else:
            log.info(
                "action %s was flagged at %s by a worker that lost its plan: the same item "
                "again", action.action_id, flagged_at.isoformat(),
            )  # fmt: skip
        if proceed is not None and not proceed():
            raise PlanLost(
                f"the delivery was lost before review item {action.action_id} went out; "
                "whoever has the plan now sends it"
            )
        message = aio_pika.Message(
            encode(action),
            content_type=JSON,
            delivery_mode=PERSISTENT,
            message_id=action.action_id,
            type="improvement_action",
            timestamp=flagged_at,
            headers={
                "plan_id": plan_id,
                "module_name": action.module_name,
                # To the microsecond (the AMQP timestamp has whole seconds).
                "flagged_at": flagged_at.isoformat(),
            },
        )
        # Retried when unconfirmed: the same message_id and flagged_at, so a reader knows a
        # repeat. A missing queue is not transient.
        routed = await self._publisher.publish_idempotent(
            self._exchange, "", message, patience_s=self._patience_s
        )
        if not routed:
            raise ReviewUndeliverable(f"no review queue is bound to {self._exchange.name!r}")

    async def _note(self, action: ImprovementAction, plan_id: str, flagged_at: datetime) -> None:
        note = aio_pika.Message(
            b"",
            delivery_mode=PERSISTENT,
            message_id=f"flagged/{action.action_id}",
            type=FLAGGED_TYPE,
            headers={
                "action_id": action.action_id,
                "plan_id": plan_id,
                "flagged_at": flagged_at.isoformat(),
            },
        )
        routed = await self._publisher.publish_idempotent(
            self._notes, "", note, patience_s=self._patience_s
        )
        if not routed:
            raise ReviewUndeliverable(f"no state log is bound to {self._notes.name!r}")
        self._flags.remember(action.action_id, flagged_at)


# --- the operators' side: list, show, ack, requeue ------------------------------------------

#: Without a new item for this long, the queue is taken as read (another reader holds the rest).
IDLE_S: Final = 2.0


@dataclass(slots=True)
class ReviewItem:
    """One action waiting for a person; repeats of the same ``action_id`` counted in ``copies``."""

    action_id: str
    action: ImprovementAction | None  # None: the body is not an action
    plan_id: str
    flagged_at: datetime | None
    deliveries: int
    copies: int = 1
    messages: list[AbstractIncomingMessage] = field(default_factory=list, repr=False)

    def age(self, now: datetime) -> str:
        """How long it has waited, as ``45s``, ``12m05s``, ``3h07m`` or ``2d04h``."""
        if self.flagged_at is None:
            return "?"
        seconds = int(max(0.0, (now - self.flagged_at).total_seconds()))
        days, rest = divmod(seconds, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        if days:
            return f"{days}d{hours:02d}h"
        if hours:
            return f"{hours}h{minutes:02d}m"
        return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class ReviewDesk:
    """Takes every pending item off ``N.review`` without acking, so they can be looked at;
    whatever is not acked goes back to the queue, in its order, when the desk closes."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        settings: WorkerSettings,
        progress: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._names = Names(settings.namespace)
        self._progress = progress
        self._connection = connection
        self._taken: list[AbstractIncomingMessage] = []
        self._settled: set[int | None] = set()

    async def __aenter__(self) -> ReviewDesk:
        return self

    async def __aexit__(self, *_: object) -> None:
        # Nacked one by one, in delivery order, so the queue keeps its order.
        for message in self._taken:
            if message.delivery_tag not in self._settled:
                await message.nack(requeue=True)

    async def items(self) -> list[ReviewItem]:
        """Every pending item, oldest first, one per ``action_id``."""
        queue_name = self._names.review_queue
        pending = (await queue_states(self._connection, {"review": queue_name}))["review"]
        if pending is None:
            raise OptimiserError(
                f"queue {queue_name!r} does not exist: start `self-optimiser run` once "
                f"(namespace {self._names.namespace!r}) so that it declares it"
            )
        if pending.messages == 0:
            return []
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=0)  # all of them at once, none acked
        queue = await channel.get_queue(queue_name, ensure=False)
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(arrived.put)
        while len(self._taken) < pending.messages:
            try:
                async with asyncio.timeout(IDLE_S):
                    self._taken.append(await arrived.get())
            except TimeoutError:
                break
            if len(self._taken) % 1000 == 0:
                self._progress(f"read {len(self._taken)} of {pending.messages} review items")
        return _group(self._taken)

    async def ack(self, item: ReviewItem) -> None:
        """Done with: every copy of the item leaves the queue."""
        for message in item.messages:
            await message.ack()
            self._settled.add(message.delivery_tag)

    def requeue_last(self, item: ReviewItem) -> None:
        """Back to the queue after every other item (at its end, on the quorum queue)."""
        tags = {m.delivery_tag for m in item.messages}
        self._taken = [m for m in self._taken if m.delivery_tag not in tags] + item.messages


def _group(messages: list[AbstractIncomingMessage]) -> list[ReviewItem]:
    items: dict[str, ReviewItem] = {}
    for message in messages:
        try:
            action: ImprovementAction | None = decode_action(message.body)
        except msgspec.DecodeError:
            action = None
        action_id = action.action_id if action else (message.message_id or "<unreadable>")
        headers = message.headers or {}
        count = headers.get("x-delivery-count", 0)
        known = items.get(action_id)
        if known is not None:
            known.copies += 1
            known.messages.append(message)
            continue
        timestamp = message.timestamp
        items[action_id] = ReviewItem(
            action_id=action_id,
            action=action,
            plan_id=str(headers.get("plan_id", "")),
            flagged_at=timestamp.replace(tzinfo=UTC) if timestamp else None,
            deliveries=count if isinstance(count, int) else 0,
            messages=[message],
        )
    return list(items.values())
