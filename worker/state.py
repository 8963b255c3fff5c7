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

import logging
import math

import msgspec
from aiormq.abc import DeliveredMessage

from schemas import EnactmentRecord, decode_record
from worker.clock import Clock
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
        if properties.message_type == FLAGGED_TYPE:
            if self.flags is not None:
                self.flags.learn(properties)
            return
        action_id = properties.message_id
        headers = properties.headers or {}
        offset = headers.get("x-stream-offset")
        offset = offset if isinstance(offset, int) else None
        if action_id and not headers.get("replay"):
            self._unread.pop(action_id, None)
        if action_id and action_id in self.memory:
            # Known already (this worker's own record, read back): the first record of an
            # action is the one kept, and its cool-down was armed when it was learnt.
            if offset is not None:
                self.memory.located(action_id, offset)
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
        self.memory.remember(record, offset)
        self._optimiser.learn(record)
