"""Guardrail state that survives restarts and failovers, kept in RabbitMQ itself.

Every record the worker publishes to ``N.results`` also lands in the stream ``N.results.log``.
At start-up the worker reads that stream from ``now - max(state window of the guards,
dedup_window_s)`` and rebuilds two things before it consumes a single plan:

- the records by ``action_id``: an action seen before is not enacted again; its original
  record (read again from the stream at the offset remembered) is published again, marked
  ``replay``;
- every guardrail's state (cool-downs, bounds, stabilization windows, budgets, breakers),
  through the optimiser's ``learn()``, the path its own records take;
- when each action was flagged for review (the notes ``worker.review`` writes before an
  item), so that an action taken over is flagged with the same item, not a second one.

It then keeps following the stream, so a standby replica stays current and takes over with
the state of the active one. ``worker.streams.caught_up()`` tells when everything published to
the stream before a moment has been read.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timedelta

import msgspec
from aiormq.abc import DeliveredMessage

from schemas import EnactmentRecord, decode_record
from worker.checkpoints import FreshIndex
from worker.clock import Clock
from worker.guards import LEARNED_FROM, state_window_s
from worker.optimiser import AsyncSelfOptimiser
from worker.planstep import RecordMemory
from worker.review import FLAGGED_TYPE, FlagMemory
from worker.streams import StreamFollower
from worker.topology import Names

log = logging.getLogger(__name__)


class StateFollower(StreamFollower):
    """Reads ``N.results.log`` into the record memory and the optimiser's guardrails."""

    def __init__(
        self,
        memory: RecordMemory,
        optimiser: AsyncSelfOptimiser,
        names: Names,
        *,
        clock: Clock,
        flags: FlagMemory | None = None,
    ) -> None:
        super().__init__(names.results_log)
        self.memory = memory
        self.flags = flags
        self._optimiser = optimiser
        self._clock = clock
        self.records_read = 0
        # What the stream held since the last checkpoint (``worker.checkpoints``), in offset
        # order: each record's first copy (offset, action id, time in ms) and each review note
        # (offset, action id, flagged at); and the records the guards learn from.
        self.fresh = FreshIndex()
        self.fresh_flags: deque[tuple[int, str, datetime]] = deque()
        self._held: int | None = None  # while a write reads ``fresh``: forget later
        self._learnt_from: deque[EnactmentRecord] = deque()
        self._seeded: set[str] = set()
        self._guard_window_s = state_window_s(optimiser.config)
        # This worker's own records, confirmed by the broker and not read back from the
        # stream yet: action_id -> (record, monotonic time of the confirm).
        self._unread: dict[str, tuple[EnactmentRecord, float]] = {}

    def expect_back(self, records: list[EnactmentRecord]) -> None:
        """These records are about to be published: expect them back from the stream.

        Registered before the publish, because the stream may hand a record back before its
        confirm is even processed; none counts as lost until ``confirmed``.
        """
        for record in records:
            if not record.replay:
                self._unread[record.action.action_id] = (record, math.inf)

    def confirmed(self, records: list[EnactmentRecord], at: float) -> None:
        """The broker confirmed these records at monotonic ``at``."""
        for record in records:
            action_id = record.action.action_id
            if action_id in self._unread:
                self._unread[action_id] = (record, at)

    def overdue(self, before: float) -> bool:
        """Whether an own record confirmed before ``before`` is still not read back."""
        return any(at < before for _, at in self._unread.values())

    def lost(self, before: float) -> list[EnactmentRecord]:
        """Own records confirmed before ``before`` and still not read back, forgotten here.

        Call it once a marker published after ``before`` has been read back: the stream holds
        everything in order, so what is missing then was lost by the stream (a leader that
        failed over has lost confirmed messages: rabbitmq-server #9457).
        """
        lost = [record for record, at in self._unread.values() if at < before]
        for record in lost:
            del self._unread[record.action.action_id]
        return lost

    def take(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        headers = properties.headers or {}
        offset = headers.get("x-stream-offset")
        offset = offset if isinstance(offset, int) else None
        if properties.message_type == FLAGGED_TYPE:
            if self.flags is not None:
                noted = self.flags.learn(properties)
                if noted is not None and offset is not None:
                    self.fresh_flags.append((offset, *noted))
            return
        action_id = properties.message_id
        if action_id and not headers.get("replay"):
            self._unread.pop(action_id, None)
        if action_id and action_id in self.memory:
            # Known already (this worker's own record, read back): the first record of an
            # action is the one kept, and its cool-down was armed when it was learnt.
            if offset is not None:
                own = self.memory.located(action_id, offset)
                if own is not None:
                    self._noted(own, offset)
            return
        try:
            record = decode_record(message.body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            log.warning("a message in %s is not a record; ignored", self.stream)
            return
        self.records_read += 1
        self.learn(record, offset)

    def learn(self, record: EnactmentRecord, offset: int | None = None) -> None:
        """Take in one record enacted by another worker (or by this one before a restart),
        found at ``offset`` in the stream."""
        if self.memory.remember(record, offset) and offset is not None:
            self._noted(record, offset)
        self._optimiser.learn(record)

    def _noted(self, record: EnactmentRecord, offset: int) -> None:
        """The first copy of a record, read at ``offset``: for the next checkpoint."""
        self.fresh.append(
            offset, record.action.action_id, math.ceil(record.attempted_at.timestamp() * 1000)
        )
        if record.status in LEARNED_FROM:
            self._learnt_from.append(record)
            self._forget_unlearnt()

    def seed(self, records: list[EnactmentRecord]) -> None:
        """The guards' records of a checkpoint: learnt (once, should a restore be tried
        again), and kept for the next one."""
        for record in records:
            if record.action.action_id not in self._seeded:
                self._seeded.add(record.action.action_id)
                self._optimiser.learn(record)
                self._learnt_from.append(record)

    def covered(self, offset: int) -> None:
        """A checkpoint covers the stream up to ``offset``: what it holds is forgotten here
        (once the write under way, if any, is done)."""
        if self._held is not None:
            self._held = max(self._held, offset)
            return
        self.fresh.forget_through(offset)
        flags = self.fresh_flags
        while flags and flags[0][0] <= offset:
            flags.popleft()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """While a checkpoint is written from ``fresh``: nothing is forgotten from it."""
        self._held = -1
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held >= 0:
                self.covered(held)

    def learnt_from(self) -> list[EnactmentRecord]:
        """The records read that the guards learn from, of the guards' window (by when they
        completed): with the checkpoints before, all a restart needs for its guards."""
        since = self._forget_unlearnt()
        return [record for record in self._learnt_from if _completed(record) >= since]

    def _forget_unlearnt(self) -> datetime:
        """Drop the records older than the guards' window from the front; its start."""
        since = self._clock.now() - timedelta(seconds=self._guard_window_s)
        kept = self._learnt_from
        while kept and _completed(kept[0]) < since:
            kept.popleft()
        return since


def _completed(record: EnactmentRecord) -> datetime:
    return record.attempted_at + timedelta(seconds=record.duration_s)
