"""What the worker remembers of what was enacted: the records by ``action_id`` (a redelivered
plan's actions are replayed, never enacted again), and when each action was flagged for review.
Both are bounded by a window and a count. No I/O: a replay's record is read back through the
``fetch`` the caller gives."""

from __future__ import annotations

import bisect
import math
from array import array
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Final

from schemas import EnactmentRecord
from worker.core.clock import Clock
from worker.core.errors import OptimiserError

#: A remembered record's offset in the state stream and its time (milliseconds since the
#: epoch), packed into one int: a million of them are a fraction of the records they stand for.
_OFFSET_BITS: Final = 48
_OFFSET_MASK: Final = (1 << _OFFSET_BITS) - 1


class RecordMemory:
    """Which actions have a record, for ``window_s`` (at most ``limit`` of them), oldest first
    out; and each one's first record, for a replay.

    Compact, because a busy hour is a million records: of a record the stream has handed
    back, only its offset in the stream is kept (``fetch`` reads it again for a replay, which
    is rare: a redelivered plan); a record is kept whole only until then (this worker's own,
    just published: ``located`` once read back). What a restart loads from checkpoints is kept
    in arrays (``_Sealed``), a fifth of that again.
    """

    def __init__(
        self,
        *,
        window_s: float,
        limit: int,
        clock: Clock,
        fetch: Callable[[list[int]], Awaitable[dict[int, list[EnactmentRecord]]]] | None = None,
    ) -> None:
        self._window_s = window_s
        self._limit = limit
        self._clock = clock
        self._fetch = fetch
        # action_id -> its record, or offset | milliseconds << _OFFSET_BITS; in arrival order
        self._entries: dict[str, EnactmentRecord | int] = {}
        self._order: deque[str] = deque()
        self._sealed: _Sealed | None = None  # older than every entry above
        self._loading: _Sealed | None = None

    def __len__(self) -> int:
        sealed = self._sealed_now()
        return len(self._entries) + (0 if sealed is None else sealed.alive)

    def __contains__(self, action_id: str) -> bool:
        if action_id in self._entries:
            return True
        sealed = self._sealed_now()
        return sealed is not None and sealed.offset(action_id) is not None

    async def recall(self, action_ids: Iterable[str]) -> dict[str, EnactmentRecord]:
        """The first record of each of ``action_ids`` remembered, read again from the stream
        where only its offset is kept (in one go: a redelivered plan's are close together)."""
        records: dict[str, EnactmentRecord] = {}
        offsets: dict[int, list[str]] = {}  # a message of the state log holds several
        sealed = self._sealed_now()
        for action_id in action_ids:
            entry = self._entries.get(action_id)
            if isinstance(entry, EnactmentRecord):
                records[action_id] = entry
            elif entry is not None:
                offsets.setdefault(entry & _OFFSET_MASK, []).append(action_id)
            elif sealed is not None and (offset := sealed.offset(action_id)) is not None:
                offsets.setdefault(offset, []).append(action_id)
        if not offsets:
            return records
        if self._fetch is None:
            raise OptimiserError("records to replay are in the state stream, unreadable here")
        for offset, held in (await self._fetch(list(offsets))).items():
            for action_id in offsets[offset]:
                record = next((r for r in held if r.action.action_id == action_id), None)
                if record is None:
                    raise OptimiserError(
                        f"the state stream holds no record of {action_id} at offset {offset}: "
                        f"the stream was replaced under this worker"
                    )
                records[action_id] = record
        return records

    def remember(self, record: EnactmentRecord, offset: int | None = None) -> bool:
        """Keep the first record of an action (only its ``offset`` in the stream, if known);
        replays and later copies change nothing (False)."""
        action_id = record.action.action_id
        if record.replay or action_id in self:
            return False
        self._entries[action_id] = record if offset is None else _packed(record, offset)
        self._order.append(action_id)
        self._forget_old()
        return True

    def located(self, action_id: str, offset: int) -> EnactmentRecord | None:
        """The stream handed back the record kept whole: from now on keep its offset only.
        The record, the first time; None if only its offset was kept already."""
        entry = self._entries.get(action_id)
        if isinstance(entry, EnactmentRecord):
            self._entries[action_id] = _packed(entry, offset)
            return entry
        return None

    def load(self, action_ids: list[str], offsets: list[int], times_ms: list[int]) -> None:
        """Remember records by their offset and time (milliseconds), from a checkpoint, oldest
        first, before anything newer is remembered."""
        if self._loading is None:
            self._loading = _Sealed()
        self._loading.add(action_ids, offsets, times_ms)

    def _sealed_now(self) -> _Sealed | None:
        loading, self._loading = self._loading, None
        if loading is not None:
            if self._sealed is not None:
                loading.merge(self._sealed)
            loading.seal()
            self._sealed = loading
            self._forget_old()
        return self._sealed

    def _forget_old(self) -> None:
        oldest_kept = (self._clock.now().timestamp() - self._window_s) * 1000
        entries, order, limit = self._entries, self._order, self._limit
        sealed = self._sealed
        if sealed is not None:
            sealed.forget_before(math.ceil(oldest_kept))
            sealed.keep_newest(limit - len(entries))
            if sealed.alive == 0:
                self._sealed = sealed = None
            else:
                limit -= sealed.alive
        while order:
            entry = entries[order[0]]
            at = (
                entry.attempted_at.timestamp() * 1000
                if isinstance(entry, EnactmentRecord)
                else entry >> _OFFSET_BITS
            )
            if len(entries) <= limit and at >= oldest_kept:
                break
            del entries[order.popleft()]


class _Sealed:
    """Remembered action ids in sorted arrays, ~36 bytes each: a hash of the id to find it, a
    second one (another 32 bits) to tell two ids with one hash apart, its offset and its time.
    Built once from what a restart loads, then only forgotten, oldest first."""

    def __init__(self) -> None:
        self._keys = array("q")
        self._checks = array("I")
        self._offsets = array("q")
        self._times = array("q")
        self._by_time = array("q")
        self._floor = -(1 << 62)  # a time at or below this is forgotten

    def add(self, action_ids: list[str], offsets: list[int], times_ms: list[int]) -> None:
        self._keys.extend(map(hash, action_ids))
        self._checks.extend(_check(action_id) for action_id in action_ids)
        self._offsets.extend(offsets)
        self._times.extend(times_ms)

    def merge(self, other: _Sealed) -> None:
        alive = [i for i, t in enumerate(other._times) if t > other._floor]
        self._keys.extend(other._keys[i] for i in alive)
        self._checks.extend(other._checks[i] for i in alive)
        self._offsets.extend(other._offsets[i] for i in alive)
        self._times.extend(other._times[i] for i in alive)

    def seal(self) -> None:
        """Sort by key. One list of packed ints (key, position) is the only other memory."""
        count = len(self._keys)
        shift = max(count, 1).bit_length()
        order = [((key + (1 << 63)) << shift) | i for i, key in enumerate(self._keys)]
        order.sort()
        mask = (1 << shift) - 1
        positions = array("q", (packed & mask for packed in order))
        del order
        self._keys = array("q", (self._keys[i] for i in positions))
        self._checks = array("L", (self._checks[i] for i in positions))
        self._offsets = array("q", (self._offsets[i] for i in positions))
        self._times = array("q", (self._times[i] for i in positions))
        self._by_time = array("q", sorted(self._times))

    @property
    def alive(self) -> int:
        return len(self._by_time) - bisect.bisect_right(self._by_time, self._floor)

    def offset(self, action_id: str) -> int | None:
        """The offset of ``action_id``'s record, if remembered."""
        key, keys = hash(action_id), self._keys
        i = bisect.bisect_left(keys, key)
        check = None
        while i < len(keys) and keys[i] == key:
            if check is None:
                check = _check(action_id)
            if self._checks[i] == check and self._times[i] > self._floor:
                return self._offsets[i]
            i += 1
        return None

    def forget_before(self, ms: int) -> None:
        self._floor = max(self._floor, ms - 1)

    def keep_newest(self, count: int) -> None:
        excess = self.alive - max(count, 0)
        if excess > 0:
            dead = len(self._by_time) - self.alive
            self._floor = self._by_time[dead + excess - 1]


def _check(action_id: str) -> int:
    # Another 32 bits of hash, independent of the first (the id reversed).
    return hash(action_id[::-1]) & 0xFFFFFFFF


def _packed(record: EnactmentRecord, offset: int) -> int:
    # Rounded up: a record is forgotten no earlier than its window says.
    return offset | (math.ceil(record.attempted_at.timestamp() * 1000) << _OFFSET_BITS)


class FlagMemory:
    """When each action was flagged for review, by ``action_id``, for ``window_s`` (at most
    ``limit`` of them): learnt from the state log, and from this worker's own flags."""

    def __init__(self, *, window_s: float, limit: int, clock: Clock) -> None:
        self._window = timedelta(seconds=window_s)
        self._limit = limit
        self._clock = clock
        self._flagged: OrderedDict[str, datetime] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flagged)

    def get(self, action_id: str) -> datetime | None:
        return self._flagged.get(action_id)

    def remember(self, action_id: str, flagged_at: datetime) -> None:
        """The first flag of an action is the one kept."""
        self._flagged.setdefault(action_id, flagged_at)
        oldest_kept = self._clock.now() - self._window
        while self._flagged:
            first = next(iter(self._flagged.values()))
            if len(self._flagged) <= self._limit and first >= oldest_kept:
                break
            self._flagged.popitem(last=False)
