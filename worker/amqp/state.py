"""Guardrail state that survives restarts and failovers, kept in RabbitMQ itself.

Every record the worker publishes to ``N.results`` also lands in the stream ``N.results.log``:
the records of a group of plans published together (``worker.amqp.outbox``) in one message, through
exchange ``N.notes``, so that the worker reading back its own pays for a message a group, not
one a record. At start-up the worker reads that stream from ``now - max(state window of the
guards, dedup_window_s)`` and rebuilds two things before it consumes a single plan:

- the records by ``action_id``: an action seen before is not enacted again; its original
  record (read again from the stream at the offset remembered) is published again, marked
  ``replay``;
- every guardrail's state (cool-downs, bounds, stabilization windows, budgets, breakers),
  through the optimiser's ``learn()``, the path its own records take;
- when each action was flagged for review (the notes ``worker.amqp.review`` writes before an
  item), so that an action taken over is flagged with the same item, not a second one.

It then keeps following the stream, so a standby replica stays current and takes over with
the state of the active one. ``worker.amqp.streams.caught_up()`` tells when everything published to
the stream before a moment has been read.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import aiormq
import msgspec
from aiormq.abc import DeliveredMessage

from schemas import EnactmentRecord
from schemas.codec import JSON
from schemas.logs import FLAGGED_TYPE, RECORD_TYPE, RECORDS_TYPE, Checkpoint, records_of
from schemas.names import Names
from worker.amqp.publisher import PERSISTENT, Outgoing
from worker.amqp.streams import StreamFollower
from worker.core.clock import Clock
from worker.core.guards import LEARNED_FROM, state_window_s
from worker.core.memory import FlagMemory, RecordMemory
from worker.core.optimiser import AsyncSelfOptimiser

log = logging.getLogger(__name__)

#: The most a message of the state log holds (records beyond go in the next): far below the
#: broker's limit, and a replay reads a whole message back for one record.
MESSAGE_BYTES: Final = 256 * 1024


def records_messages(exchange: str, bodies: Sequence[bytes]) -> list[Outgoing]:
    """The state log's messages for the records published as ``bodies`` (JSON, each): one,
    unless they add up to more than ``MESSAGE_BYTES``."""
    messages: list[Outgoing] = []
    start, size = 0, 0
    for end, body in enumerate(bodies):
        if size and size + len(body) > MESSAGE_BYTES:
            messages.append(_records_message(exchange, bodies[start:end]))
            start, size = end, 0
        size += len(body) + 1
    if start < len(bodies):
        messages.append(_records_message(exchange, bodies[start:]))
    return messages


def _records_message(exchange: str, bodies: Sequence[bytes]) -> Outgoing:
    properties = aiormq.spec.Basic.Properties(
        content_type=JSON,
        delivery_mode=PERSISTENT,
        message_id=uuid.uuid4().hex,
        message_type=RECORDS_TYPE,
    )
    return Outgoing(exchange, "", b"[" + b",".join(bodies) + b"]", properties)


def records_in(message: DeliveredMessage) -> list[EnactmentRecord]:
    """The records in a message of the state log: a group's, or the one record a message of
    version 0.1 holds; none in a review note. Raises ``msgspec.DecodeError``."""
    return records_of(message.header.properties.message_type, message.body)


@dataclass(frozen=True, slots=True)
class CheckpointView:
    """What a checkpoint of the state log would hold now: the records and review notes read
    since the last one (``pending`` of them: ``index`` and ``flags``), the offsets read, and
    the records the guards learn from (asked only when one is written)."""

    pending: int
    first_offset: int
    last_offset: int | None
    last_id: str
    index: FreshIndex
    flags: tuple[tuple[int, str, datetime], ...]
    guard_records: Callable[[], list[EnactmentRecord]]


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
        self._names = names
        self.memory = memory
        self.flags = flags
        self._optimiser = optimiser
        self._clock = clock
        self.records_read = 0
        # What the stream held since the last checkpoint (``worker.amqp.checkpoints``), in offset
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
        self._told_of_binding = False

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
                noted = _flagged(properties, self.flags)
                if noted is not None and offset is not None:
                    self.fresh_flags.append((offset, *noted))
            return
        if properties.message_type in (RECORD_TYPE, None):
            # One record a message: version 0.1 wrote them so, through a binding from
            # N.results. Known already (this worker's own, say): not decoded again.
            action_id = properties.message_id
            if action_id in self._unread:
                self._tell_of_binding()
            if action_id and self._known(action_id, bool(headers.get("replay")), offset):
                return
        try:
            records = records_in(message)
        except (msgspec.DecodeError, UnicodeDecodeError):
            log.warning("a message in %s is not a record; ignored", self.stream)
            return
        for record in records:
            if not self._known(record.action.action_id, record.replay, offset):
                self.records_read += 1
                self.learn(record, offset)

    def _known(self, action_id: str, replay: bool, offset: int | None) -> bool:
        """Whether the action has a record here already (this worker's own, read back: from
        now on only its ``offset`` is kept). The first record of an action is the one kept,
        and its cool-down was armed when it was learnt."""
        if not replay:
            self._unread.pop(action_id, None)
        if action_id not in self.memory:
            return False
        if offset is not None:
            own = self.memory.located(action_id, offset)
            if own is not None:
                self._noted(own, offset)
        return True

    def _tell_of_binding(self) -> None:
        """This worker's own record came one to a message: the binding of version 0.1."""
        if not self._told_of_binding:
            self._told_of_binding = True
            log.warning(
                "%s is still bound to %s, as version 0.1 had it: every record is written to "
                "the state log and read back twice. Remove that binding (this version's "
                "definitions do not have it; a worker that declares the namespace removes it)",
                self.stream, self._names.results_exchange,
            )  # fmt: skip

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

    def checkpoint_view(self) -> CheckpointView:
        """What the next checkpoint would hold, as one value (``worker.amqp.checkpointing``)."""
        return CheckpointView(
            pending=len(self.fresh) + len(self.fresh_flags),
            first_offset=self.first_offset or 0,
            last_offset=self.last_offset,
            last_id=self.last_id,
            index=self.fresh,
            flags=tuple(self.fresh_flags),
            guard_records=self.learnt_from,
        )

    def load(self, checkpoint: Checkpoint) -> int:
        """Remember what a checkpoint indexes (oldest first, before anything newer is read);
        how many action ids it held."""
        self.memory.load(checkpoint.ids, checkpoint.offsets, checkpoint.times_ms)
        if self.flags is not None:
            for action_id, flagged_at in checkpoint.flags:
                self.flags.remember(action_id, flagged_at)
        return len(checkpoint.ids)

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


def _flagged(
    properties: aiormq.spec.Basic.Properties, flags: FlagMemory
) -> tuple[str, datetime] | None:
    """Take in a ``FLAGGED_TYPE`` note read from the state log: (action id, when), or None
    for a note that is not one."""
    headers = properties.headers or {}
    action_id, flagged_at = headers.get("action_id"), headers.get("flagged_at")
    if not isinstance(action_id, str) or not isinstance(flagged_at, str):
        log.warning("a review note without an action id or a time; ignored")
        return None
    try:
        when = datetime.fromisoformat(flagged_at)
    except ValueError:
        log.warning("a review note with a time that is not one (%r); ignored", flagged_at)
        return None
    flags.remember(action_id, when)
    return action_id, when


class FreshIndex:
    """The records read since the last checkpoint, in offset order: offset, action id and time
    (milliseconds) of each. In arrays, 24 bytes an entry: a worker that read a busy window
    whole holds a million of them until its first write."""

    def __init__(self) -> None:
        self.offsets = array("q")
        self.ids: list[str] = []
        self.times_ms = array("q")

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, offset: int, action_id: str, ms: int) -> None:
        self.offsets.append(offset)
        self.ids.append(action_id)
        self.times_ms.append(ms)

    def position(self, offset: int) -> int:
        """The index of the first entry at ``offset`` or after it."""
        return bisect.bisect_left(self.offsets, offset)

    def forget_through(self, offset: int) -> None:
        """Drop every entry up to ``offset``."""
        end = bisect.bisect_right(self.offsets, offset)
        del self.offsets[:end], self.ids[:end], self.times_ms[:end]
