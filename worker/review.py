"""FLAG_FOR_REVIEW over AMQP: one persistent message per action on queue ``N.review``."""

from __future__ import annotations

import aio_pika

from schemas import ImprovementAction, encode
from schemas.codec import JSON
from worker.errors import OptimiserError
from worker.publisher import PERSISTENT, Publisher


class ReviewUndeliverable(OptimiserError):
    """The review queue does not exist: the broker returned the item."""


class AmqpReviewSink:
    """Publishes the action to ``queue`` and returns once the broker has confirmed it.

    ``message_id`` is the action's ``action_id``, so a reader can drop a duplicate.
    """

    def __init__(self, publisher: Publisher, queue: str) -> None:
        self._publisher = publisher
        self._queue = queue

    async def submit(self, action: ImprovementAction, *, plan_id: str) -> None:
        message = aio_pika.Message(
            encode(action),
            content_type=JSON,
            delivery_mode=PERSISTENT,
            message_id=action.action_id,
            type="improvement_action",
            headers={"plan_id": plan_id, "module_name": action.module_name},
        )
        # Retried when unconfirmed: the item's message_id is its action_id, so a reader drops
        # a repeat. A missing queue is not transient.
        routed = await self._publisher.publish_idempotent(
            self._publisher.default_exchange, self._queue, message
        )
        if not routed:
            raise ReviewUndeliverable(f"review queue {self._queue!r} does not exist")
