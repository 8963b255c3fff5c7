"""FLAG_FOR_REVIEW over AMQP, the worker's side: one persistent message per action, through
exchange ``N.review`` to the queue of the same name (the operators' side: ``worker.ops.review``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
)

from schemas import ImprovementAction, encode
from schemas.codec import JSON
from schemas.logs import FLAGGED_TYPE
from worker.amqp.errors import ReviewUndeliverable
from worker.amqp.publisher import PERSISTENT, Publisher
from worker.core.clock import Clock
from worker.core.errors import PlanLost
from worker.core.memory import FlagMemory

log = logging.getLogger(__name__)


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
        clock: Clock,
        patience_s: float | None = None,
        failed: Callable[[], None] | None = None,
    ) -> None:
        self._publisher = publisher
        self._exchange = exchange
        self._notes = notes
        self._flags = flags
        self._clock = clock
        self._patience_s = patience_s  # how long an item waits out a broker outage
        self._failed = failed  # told of each publish the broker did not confirm

    async def submit(
        self,
        action: ImprovementAction,
        *,
        plan_id: str,
        proceed: Callable[[], bool] | None = None,
    ) -> None:
        flagged_at = self._flags.get(action.action_id)
        if flagged_at is None:
            flagged_at = self._clock.now()
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
            self._exchange, "", message, patience_s=self._patience_s, failed=self._failed
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
            self._notes, "", note, patience_s=self._patience_s, failed=self._failed
        )
        if not routed:
            raise ReviewUndeliverable(f"no state log is bound to {self._notes.name!r}")
        self._flags.remember(action.action_id, flagged_at)


# --- the operators' side: list, show, ack, requeue ------------------------------------------
