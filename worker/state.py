"""Guardrail state that survives restarts and failovers, kept in RabbitMQ itself.

Every record the worker publishes to ``N.results`` also lands in the stream ``N.results.log``.
At start-up the worker reads that stream from ``now - max(cool_down_s, dedup_window_s)`` and
rebuilds two things before it consumes a single plan:

- the records by ``action_id``: an action seen before is not enacted again; its original
  record is published again, marked ``replay``;
- the cool-downs: every SUCCESS re-arms its (module, kind) from the time it completed.

It then keeps following the stream, so a standby replica stays current and takes over with
the state of the active one. ``worker.streams.caught_up()`` tells when everything published to
the stream before a moment has been read.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import timedelta

import msgspec
from aiormq.abc import DeliveredMessage

from schemas import EnactmentRecord, EnactmentStatus, decode_record
from worker.clock import Clock
from worker.optimiser import AsyncSelfOptimiser
from worker.streams import StreamFollower
from worker.topology import Names

log = logging.getLogger(__name__)


class RecordMemory:
    """Records by ``action_id`` for ``window_s`` (at most ``limit`` of them), oldest first out."""

    def __init__(self, *, window_s: float, limit: int, clock: Clock) -> None:
        self._window = timedelta(seconds=window_s)
        self._limit = limit
        self._clock = clock
        self._records: OrderedDict[str, EnactmentRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, action_id: str) -> EnactmentRecord | None:
        return self._records.get(action_id)

    def remember(self, record: EnactmentRecord) -> None:
        """Keep the first record of an action; replays and later copies change nothing."""
        action_id = record.action.action_id
        if action_id in self._records or record.replay:
            return
        self._records[action_id] = record
        self._forget_old()

    def _forget_old(self) -> None:
        oldest_kept = self._clock.now() - self._window
        while self._records:
            first = next(iter(self._records.values()))
            if len(self._records) <= self._limit and first.attempted_at >= oldest_kept:
                break
            self._records.popitem(last=False)


class StateFollower(StreamFollower):
    """Reads ``N.results.log`` into the record memory and the optimiser's cool-downs."""

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
        """Take in one record, from the stream or straight from ``enact()``."""
        self.memory.remember(record)
        if record.status is EnactmentStatus.SUCCESS and not record.replay:
            completed = record.attempted_at + timedelta(seconds=record.duration_s)
            self._optimiser.arm_cool_down(
                record.action.module_name, record.action.action_kind, completed
            )
