"""Publishing a plan's records until the broker has confirmed every one.

Each record goes to ``N.results`` (routing key ``<ACTION_KIND>.<STATUS>.<module_name>``), and
those that are not replays go together to the state log, in one message through ``N.notes``
(``worker.amqp.outbox`` gathers the records of plans enacted back to back into one write). The
actions are enacted: their records must go out, however long the broker takes, so what it did
not confirm is published again with backoff; nacking the plan instead would have it enacted
again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import aiormq

from schemas import EnactmentRecord, encode, routing_key
from schemas.codec import JSON
from schemas.logs import RECORD_TYPE
from worker.amqp.context import Context
from worker.amqp.errors import PublishFailed
from worker.amqp.outbox import Outbox
from worker.amqp.publisher import PERSISTENT, Outgoing
from worker.amqp.state import StateFollower

log = logging.getLogger(__name__)

#: Backoff between attempts to publish what the broker did not confirm.
RETRY_FIRST_S: Final = 0.5
RETRY_MAX_S: Final = 10.0


class RecordSink:
    """Publishes records to ``N.results`` and the state log, until confirmed."""

    def __init__(self, context: Context, outbox: Outbox, state: StateFollower) -> None:
        self.outbox = outbox
        self.state = state
        self._names, self._metrics, self._clock = context.names, context.metrics, context.clock

    async def publish(
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
        self.state.expect_back(state)
        unroutable, delay = 0, RETRY_FIRST_S
        while True:
            failed, state_failed, returned = await self._publish_once(records, state)
            unroutable += returned
            if state and state_failed is None:
                self.state.confirmed(state, self._clock.monotonic())
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

    async def _publish_once(
        self, records: list[EnactmentRecord], state: list[EnactmentRecord]
    ) -> tuple[list[tuple[EnactmentRecord, PublishFailed]], PublishFailed | None, int]:
        """One attempt: the records not confirmed on ``N.results`` (with why), why the state
        log's message was not (None: it was, or none was asked), and how many records no queue
        was bound to receive."""
        names = self._names
        bodies = {id(r): encode(r) for r in (*records, *state)}
        sent = await self.outbox.publish(
            [
                Outgoing(names.results_exchange, routing_key(r), bodies[id(r)], _properties(r))
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
                names.results_exchange,
            )  # fmt: skip
        state_failed = sent.state if isinstance(sent.state, PublishFailed) else None
        if sent.state is False:
            # The state log is not bound: the records would not survive a restart, and a
            # redelivery would enact them again. The plan stays in hand until it is back.
            self._metrics.records_unroutable.inc(len(state))
            log.error(
                "the state log's message for %d record(s) reached no queue: %s is not bound "
                "to %s; holding the plans until it is",
                len(state), names.results_log, names.notes,
            )  # fmt: skip
            state_failed = PublishFailed(f"nothing is bound to exchange {names.notes}")
        return failed, state_failed, len(unroutable)


def _properties(record: EnactmentRecord) -> aiormq.spec.Basic.Properties:
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
