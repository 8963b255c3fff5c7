"""The fence: before a plan is enacted, both state streams are read up to a marker of this
worker's.

That proves the broker still hears this worker, and that every record another worker (or this
one, before a reconnect) wrote before now is known, so nothing it enacted is enacted again. Own
records that should have been read back by then and were not were lost by the stream: they are
published again. A fence slower than ``fence_timeout_s`` enacts nothing, and is tried again
while the delivery is still this worker's; once it is not, the broker gives the plan to
whoever consumes now.

A fence serves the plans after it for a moment (``serves``): see its docstring for why that
holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from aiormq.abc import DeliveredMessage

from worker.amqp.context import Context
from worker.amqp.deliveries import owned
from worker.amqp.errors import BROKER_ERRORS, StreamUnavailable
from worker.amqp.outcome import STOPPING, Fate, Outcome
from worker.amqp.records import RETRY_FIRST_S, RETRY_MAX_S, RecordSink
from worker.amqp.streams import StreamFollower

log = logging.getLogger(__name__)

#: After this many failed fences in a row, the worker moves to another broker node.
MOVE_AFTER_FAILED_FENCES: Final = 3
#: Own records confirmed this long ago and not read back from the state log are looked for.
LOST_AFTER_S: Final = 1.0
_LOST = Outcome(
    Fate.LOST, "delivery lost while reading the state; not enacted", level=logging.WARNING
)


@dataclass(frozen=True, slots=True)
class Fenced:
    """The last fence that passed: on which channel (None: a delivery no longer owned), and
    when it started (monotonic)."""

    channel: object
    at: float


def serves(
    last: Fenced | None, channel: object, *, redelivered: bool, now: float, reuse_s: float
) -> bool:
    """Whether the fence ``last`` still serves a plan delivered on ``channel`` at ``now``.

    A fence started less than ``reuse_s`` ago, on the channel this plan came on, serves the
    plans delivered there that are not redeliveries. Once a consumer is active on a channel,
    the broker gives nobody else the plans (single active consumer): what a fence proves for
    one plan holds for the next until another consumer can have taken over, which takes a lost
    channel (a new one fences first), a redelivery (fenced, after ``takeover_wait_s``), or a
    node declared down, seconds at the least (the bound).
    """
    return (
        not redelivered
        and channel is not None
        and last is not None
        and channel is last.channel
        and now - last.at < reuse_s
    )


class Fence:
    """Fences plans (``before``) and looks for own records the stream lost (``look_for_lost``)."""

    def __init__(
        self,
        context: Context,
        *,
        catch_up: Callable[[], Awaitable[None]],
        followers: Sequence[StreamFollower],
        records: RecordSink,
    ) -> None:
        self._context = context
        self._catch_up = catch_up
        self._state = records.state
        self._followers = followers
        self._records = records
        self._clock = context.clock
        self._last: Fenced | None = None

    async def before(self, plan_id: str, delivery: DeliveredMessage) -> Outcome | None:
        """None once a fence serves this plan; else what becomes of its delivery (lost, or
        returned because the worker is stopping)."""
        channel = delivery.channel if owned(delivery) else None
        asked = self._clock.monotonic()
        redelivered = bool(delivery.redelivered)
        reuse_s = self._context.settings.fence_reuse_s
        if serves(self._last, channel, redelivered=redelivered, now=asked, reuse_s=reuse_s):
            return None
        delay, failed = RETRY_FIRST_S, 0
        while True:
            started = self._clock.monotonic()
            try:
                await self._catch_up()
            except (StreamUnavailable, *BROKER_ERRORS) as exc:
                if not owned(delivery):
                    return _LOST
                if self._context.stopping():
                    return STOPPING
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
            self._last = Fenced(channel, asked)
            return None

    def overdue(self) -> bool:
        """Whether an own record confirmed more than ``LOST_AFTER_S`` ago is not read back."""
        return self._state.overdue(self._clock.monotonic() - LOST_AFTER_S)

    async def look_for_lost(self) -> bool:
        """Catch up without a plan, and publish again what the stream lost; False if the
        streams could not be read (the next plan fences, says why, and recovers)."""
        started = self._clock.monotonic()
        try:
            await self._catch_up()
        except (StreamUnavailable, *BROKER_ERRORS):
            self._last = None
            return False
        await self._resend_lost("(none)", before=started)
        return True

    async def _resend_lost(self, plan_id: str, *, before: float) -> None:
        """Once a marker published at ``before`` is read back: own records confirmed before
        it and still not read were lost by the stream; publish them again."""
        lost = self._state.lost(before=before)
        if lost:
            self._context.metrics.records_resent.inc(len(lost))
            log.warning(
                "%d record(s) this worker published are missing from %s (the stream lost "
                "them); writing them to it again",
                len(lost), self._state.stream,
            )  # fmt: skip
            await self._records.publish(plan_id, [], lost)

    async def _reconsume(self, failed: int) -> None:
        if failed % MOVE_AFTER_FAILED_FENCES == 0:
            # Seen on a cluster: after the stream leader's node came back, the replica on this
            # node delivered nothing more to any consumer of ours. Another node's replica does.
            log.warning(
                "%d fences in a row failed: reconnecting through the next broker address", failed
            )
            await self._context.move_node()
            return
        for follower in self._followers:
            try:
                await follower.reconsume()
            except BROKER_ERRORS as exc:
                log.warning("could not consume %s again: %s", follower.stream, exc)
