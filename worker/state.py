"""Guardrail state that survives restarts and failovers, kept in RabbitMQ itself.

Every record the worker publishes to ``N.results`` also lands in the stream ``N.results.log``.
At start-up the worker reads that stream from ``now - max(state window of the guards,
dedup_window_s)`` and rebuilds two things before it consumes a single plan:

- the records by ``action_id``: an action seen before is not enacted again; its original
  record is published again, marked ``replay``;
- every guardrail's state (cool-downs, bounds, stabilization windows, budgets, breakers),
  through the optimiser's ``learn()``, the path its own records take.

It then keeps following the stream, so a standby replica stays current and takes over with
the state of the active one. ``worker.streams.caught_up()`` tells when everything published to
the stream before a moment has been read.
"""

from __future__ import annotations

import logging

import msgspec
from aiormq.abc import DeliveredMessage

from schemas import EnactmentRecord, decode_record
from worker.clock import Clock
from worker.optimiser import AsyncSelfOptimiser
from worker.planstep import RecordMemory
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
    ) -> None:
        super().__init__(names.results_log)
        self.memory = memory
        self._optimiser = optimiser
        self._clock = clock
        self.records_read = 0

    def take(self, message: DeliveredMessage) -> None:
        action_id = message.header.properties.message_id
        if action_id and self.memory.get(action_id) is not None:
            # Known already (this worker's own record, read back): the first record of an
            # action is the one kept, and its cool-down was armed when it was learnt.
            return
        try:
            record = decode_record(message.body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            log.warning("a message in %s is not a record; ignored", self.stream)
            return
        self.records_read += 1
        self.learn(record)

    def learn(self, record: EnactmentRecord) -> None:
        """Take in one record enacted by another worker (or by this one before a restart)."""
        self.memory.remember(record)
        self._optimiser.learn(record)
