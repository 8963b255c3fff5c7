"""The plan handler: what becomes of each delivery of ``N.plans``, decided in steps and settled
in one place.

Each delivery is handled in a task of its own (which a closed channel does not cancel, and
shutdown waits for). The steps each return an ``Outcome``: unreadable (``intake``) -> parked;
its turn come (plans are enacted one at a time, in delivery order) and its fence passed
(``fence``) -> enacted by the pure per-plan step, its records published until confirmed
(``records``) -> acked. Anything else (the worker stopping, the delivery lost, its originals
unreadable, a bug) is an outcome too. ``_settle`` alone acks, nacks or parks the delivery,
counts it and writes its one log line (``deliveries.settle`` is where the ack is sent).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Final

from aiormq.abc import DeliveredMessage

from schemas import EnactmentRecord, EnactmentStatus, Plan
from worker.amqp.context import Context
from worker.amqp.deliveries import owned, settle
from worker.amqp.errors import BROKER_ERRORS, PublishFailed, StreamUnavailable
from worker.amqp.fence import LOST_AFTER_S, Fence
from worker.amqp.intake import parked, read_plan
from worker.amqp.outcome import STOPPING, Fate, Outcome, Unreadable, requeued
from worker.amqp.records import RecordSink
from worker.core.errors import cancelled_here
from worker.core.planstep import PlanStep

log = logging.getLogger(__name__)

#: A delivery that must go back to the queue after a failure goes back no sooner than this: a
#: plan that fails the same way must not spin.
RETRY_AFTER_S: Final = 1.0


class PlanHandler:
    """Handles each delivered plan (see the module docstring)."""

    def __init__(self, context: Context, step: PlanStep, fence: Fence, records: RecordSink) -> None:
        self._context = context
        self._settings = context.settings
        self._names, self._metrics, self._clock = context.names, context.metrics, context.clock
        self._step = step
        self._fence = fence
        self._records = records
        self._outbox = records.outbox
        self._publisher = records.outbox.publisher
        self._turn = asyncio.Lock()  # FIFO: plans are enacted in delivery order
        self._in_hand: set[asyncio.Task[None]] = set()
        self.handled = 0  # plans enacted: the worker that enacts writes the checkpoints

    # --- the tasks, one a delivery -------------------------------------------------------

    def deliver(self, delivery: DeliveredMessage) -> None:
        """Handle ``delivery`` in a task of its own, which shutdown waits for: a plan in hand
        is finished whatever happens to its channel (a lost connection, the broker's consumer
        timeout; its ack then fails and the broker redelivers it)."""
        task = asyncio.create_task(self.handle(delivery))
        self._in_hand.add(task)
        task.add_done_callback(self._in_hand.discard)

    @property
    def in_hand(self) -> int:
        """Deliveries being handled now."""
        return len(self._in_hand)

    async def drain(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for the plans in hand; the late ones return to the queue."""
        if not self._in_hand:
            return
        _, late = await asyncio.wait(set(self._in_hand), timeout=grace_s)
        if late:
            log.warning(
                "%d plan(s) still in hand after %gs; they return to the queue", len(late), grace_s
            )
            for task in late:
                task.cancel()
            await asyncio.wait(late)

    # --- deciding -------------------------------------------------------------------------

    async def handle(self, delivery: DeliveredMessage) -> None:
        """Decide what becomes of ``delivery``, then settle it."""
        started = self._clock.monotonic()
        try:
            outcome = await self._decide(delivery, started)
        except asyncio.CancelledError:
            if cancelled_here():
                raise  # shutdown cancelled it: the delivery returns with the channel
            # A channel dropped under it (errors.cancelled_here): must not strand the delivery.
            outcome = requeued(
                "cut short by a closed channel; it returns to the queue", level=logging.ERROR
            )
        except Exception as exc:
            outcome = Outcome(
                Fate.REQUEUED,
                f"unexpected error; it returns to the queue in {RETRY_AFTER_S:g}s",
                level=logging.ERROR,
                delay_s=RETRY_AFTER_S,
                error=exc,
            )
        await self._settle(delivery, outcome, started)

    async def _decide(self, delivery: DeliveredMessage, arrived: float) -> Outcome:
        plan = read_plan(delivery, self._settings.max_plan_bytes)
        if isinstance(plan, Unreadable):
            return Outcome(Fate.PARKED, unreadable=plan, level=logging.WARNING)
        with self._outbox.holding():
            enacted = await self._enact(plan, delivery, arrived)
        if isinstance(enacted, Outcome):
            return enacted
        # The actions are enacted: their records must go out, however long the broker takes.
        # Nacking would have the plan enacted again.
        unroutable = await self._records.publish(plan.plan_id, enacted)
        return Outcome(
            Fate.ACKED,
            plan_id=plan.plan_id,
            records=enacted,
            actions=len(plan.actions),
            unroutable=unroutable,
        )

    async def _enact(
        self, plan: Plan, delivery: DeliveredMessage, arrived: float
    ) -> list[EnactmentRecord] | Outcome:
        """The plan's records, its turn come and its fence passed; or why it is not enacted."""
        async with self._turn:
            if delivery.redelivered:
                count = (delivery.header.properties.headers or {}).get("x-delivery-count", "?")
                log.info("plan %s redelivered (delivery count %s)", plan.plan_id, count)
                # The worker that had it may have enacted part of it, its records still in
                # flight (its node failed under them); they are resent once it reconnects.
                await asyncio.sleep(
                    arrived + self._settings.takeover_wait_s - self._clock.monotonic()
                )
            if self._context.stopping():
                return _of(plan, STOPPING)
            fenced = await self._fence.before(plan.plan_id, delivery)
            if fenced is not None:
                return _of(plan, fenced)
            self.handled += 1
            try:
                return await self._step.run(plan, owned=lambda: owned(delivery))
            except StreamUnavailable as exc:
                return _of(
                    plan,
                    requeued(
                        f"the records of its actions enacted before could not be read back "
                        f"({exc}); nothing enacted, it returns to the queue in "
                        f"{RETRY_AFTER_S:g}s",
                        level=logging.WARNING,
                        delay_s=RETRY_AFTER_S,
                    ),
                )

    async def watch_lost(self) -> None:
        """Own records confirmed a while ago and not read back are looked for at once (a
        catch-up without a plan, in the plans' turn), not only at the next plan's fence, which
        a fence that serves several plans makes rarer."""
        while True:
            await asyncio.sleep(LOST_AFTER_S)
            if not self._fence.overdue():
                continue
            async with self._turn:
                found = await self._fence.look_for_lost()
            if not found:
                await asyncio.sleep(self._settings.fence_timeout_s)

    # --- settling: the one place ------------------------------------------------------------

    async def _settle(self, delivery: DeliveredMessage, outcome: Outcome, started: float) -> None:
        """Park, ack or nack the delivery as ``outcome`` says, count it, and say why."""
        if outcome.unreadable is not None:
            outcome = await self._park(delivery, outcome.unreadable)
        if outcome.delay_s > 0:
            await asyncio.sleep(outcome.delay_s)
        fate, why = outcome.fate, outcome.why
        if fate is not Fate.LOST and not await _acknowledge(delivery, fate):
            if fate is not Fate.REQUEUED:
                why += "; ack lost with the channel, the broker will redeliver it"
            fate = Fate.REQUEUED
        self._metrics.plans_consumed.labels(fate).inc()
        if outcome.fate is Fate.ACKED:
            elapsed = self._clock.monotonic() - started
            self._metrics.plan_duration.observe(elapsed)
            why = self._enacted(outcome, elapsed) + why
        plan = outcome.plan_id
        subject = f"plan {plan}" if plan else f"delivery {delivery.delivery_tag}"
        log.log(outcome.level, "%s: %s", subject, why, exc_info=outcome.error)

    def _enacted(self, outcome: Outcome, elapsed: float) -> str:
        counts = Counter(r.status.value for r in outcome.records)
        replayed = sum(1 for r in outcome.records if r.replay)
        if replayed:
            self._metrics.actions_replayed.inc(replayed)
        return (
            f"{outcome.actions} actions in {elapsed * 1000:.1f} ms: "
            + ", ".join(f"{s.value} {counts[s.value]}" for s in EnactmentStatus if counts[s.value])
            + (f"; {replayed} replayed (enacted before)" if replayed else "")
            + (f"; {outcome.unroutable} record(s) unroutable" if outcome.unroutable else "")
        )

    async def _park(self, delivery: DeliveredMessage, unreadable: Unreadable) -> Outcome:
        """Move an unreadable delivery to ``N.plans.invalid``; requeued in a while if that
        publish fails."""
        serial = int(self._clock.monotonic() * 1e9)
        try:
            message = parked(delivery, unreadable, at=self._clock.now(), serial=serial)
            routed = await self._publisher.publish_body(
                self._names.invalid_exchange, "", message.body, message.properties
            )
            if not routed:
                raise PublishFailed(f"queue {self._names.invalid_queue!r} does not exist")
        except Exception as exc:  # PublishFailed; anything else is a bug, and fails the same
            self._metrics.publish_failures.labels("invalid").inc()
            return Outcome(
                Fate.REQUEUED,
                f"unreadable ({unreadable.kind}) and could not be parked; it returns to the "
                f"queue in {RETRY_AFTER_S:g}s: {exc}",
                level=logging.ERROR,
                delay_s=RETRY_AFTER_S,
                error=None if isinstance(exc, PublishFailed) else exc,
            )
        self._metrics.plans_parked.labels(unreadable.kind).inc()
        return Outcome(
            Fate.PARKED,
            f"parked in {self._names.invalid_queue} ({unreadable.kind}): {unreadable.reason[:300]}",
            level=logging.WARNING,
        )


def _of(plan: Plan, outcome: Outcome) -> Outcome:
    """``outcome``, said of ``plan``."""
    return Outcome(
        outcome.fate, outcome.why, level=outcome.level, plan_id=plan.plan_id,
        delay_s=outcome.delay_s,
    )  # fmt: skip


async def _acknowledge(delivery: DeliveredMessage, fate: Fate) -> bool:
    """Ack (acked, parked) or nack back to the queue (requeued); False if the channel is gone
    (the broker redelivers it)."""
    tag = delivery.delivery_tag
    if tag is None:
        return False
    try:
        await settle(delivery, ack=fate is not Fate.REQUEUED)
    except asyncio.CancelledError:
        if cancelled_here():
            raise
        log.warning("could not settle delivery %s: the channel closed under it", tag)
        return False
    except BROKER_ERRORS as exc:
        log.warning("could not settle delivery %s: %s", tag, exc)
        return False
    return True
