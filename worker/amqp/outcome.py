"""What became of a delivery of ``N.plans``: decided by the steps of handling it, acted on in one
place (``PlanHandler._settle``), which acks, nacks or parks it, counts it and says why in one
log line.

The fates are the label values of ``asi_optimiser_plans_consumed`` (``PLAN_OUTCOMES`` is this
enum), so a new fate cannot miss its series.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from schemas import EnactmentRecord, ParkReason


class Fate(enum.StrEnum):
    """How a delivery left this worker's hands."""

    ACKED = "acked"  # its records (and review items) confirmed, then acked
    PARKED = "parked"  # unreadable: republished to N.plans.invalid, then acked
    REQUEUED = "requeued"  # nacked back to the queue, or its ack lost with the channel
    LOST = "lost"  # its channel went before anything was enacted: nothing to settle it on


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A delivery that is not a plan this worker can read, and why (its ``x-error``)."""

    kind: ParkReason
    reason: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """A delivery's fate, and what its one log line says.

    ``delay_s``: requeued no sooner than this (a plan that fails the same way must not spin).
    ``records``: an enacted plan's, in its order; ``unroutable`` of them reached no queue.
    """

    fate: Fate
    why: str = ""
    level: int = logging.INFO
    plan_id: str | None = None
    delay_s: float = 0.0
    unreadable: Unreadable | None = None
    records: Sequence[EnactmentRecord] = ()
    actions: int = 0
    unroutable: int = 0
    error: BaseException | None = None


def requeued(why: str, *, level: int = logging.INFO, delay_s: float = 0.0) -> Outcome:
    """Back to the queue, for another try (here or on the standby)."""
    return Outcome(Fate.REQUEUED, why, level=level, delay_s=delay_s)


#: Before its turn or while its fence was tried: the plan is not this worker's to enact any more.
STOPPING = requeued("not enacted: the worker is stopping; it returns to the queue")
