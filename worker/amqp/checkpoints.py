"""Checkpoints of the state log: a restart reads an index, not every record of the window.

A restore that reads a busy hour of ``N.results.log`` spends a minute in the AMQP client (a
million messages). So the worker that enacts plans summarises what it read of the state log
into the stream ``N.checkpoints``, each message covering the offsets ``first..last`` of it:

- the index: each record's first copy in that run, as its action id, offset and time (what
  the record memory keeps; a replay reads the original back at that offset);
- the review notes in that run (action id, when it was flagged);
- in the last message of a write (``final``), the records the guards learn from
  (``LEARNED_FROM``) of their window: learning those gives every guard the state that
  learning every record gives (``tests/unit/test_guard_properties.py`` tries to break that).

Each write starts where the last one read back from ``N.checkpoints`` ended (``Chain``), so a
message the stream lost is written again, and a standby that takes over goes on from the
active worker's last. A start-up reads ``N.checkpoints`` from the state window's start, takes
the messages that follow each other without a gap up to the last ``final`` one, checks that
they cover the window and that ``N.results.log`` still holds at ``last`` the message they name
(a stream declared anew starts its offsets over), loads them, and reads ``N.results.log`` only
after ``last``. Anything else (no checkpoints, a gap, another stream) falls back to reading the
window whole: slower, never wrong.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from enum import Enum
from typing import Final

import msgspec
from aiormq.abc import DeliveredMessage

from schemas import EnactmentRecord, decode_record, encode
from schemas.logs import (
    CHECKPOINT_TYPE,
    Checkpoint,
    CheckpointHead,
    decode_checkpoint,
    decode_checkpoint_head,
)
from worker.amqp.state import FreshIndex, StateFollower
from worker.amqp.streams import StreamFollower

log = logging.getLogger(__name__)

#: Index entries per message (~55 bytes each): a message of a few megabytes.
ENTRIES_PER_MESSAGE: Final = 50_000


class Offer(Enum):
    IGNORED = "ignored"
    EXTENDS = "extends"
    STARTS = "starts"


class Chain:
    """Which checkpoints of one state log, offered in stream order, follow each other without
    a gap: from ``first`` up to ``covered``."""

    def __init__(self, stream: str, covered: int | None = None) -> None:
        self.stream = stream
        self.first: int | None = None if covered is None else 0
        self.covered = covered

    def offer(self, head: CheckpointHead) -> Offer:
        if head.stream != self.stream or head.last < head.first:
            return Offer.IGNORED
        covered = self.covered
        if covered is not None and head.first <= covered + 1:
            if head.last <= covered:
                return Offer.IGNORED  # covered already (a second writer, a write again)
            self.covered = head.last
            return Offer.EXTENDS
        if covered is None or head.start:
            # After a gap only a message that covers all its writer knew can begin again.
            self.first, self.covered = head.first, head.last
            return Offer.STARTS
        return Offer.IGNORED


class CheckpointFollower(StreamFollower):
    """Reads ``N.checkpoints``: at start-up the chain to load, then how far it reaches, so
    the next write goes on from there (and the state follower forgets what it covers)."""

    def __init__(self, stream: str, chain: Chain) -> None:
        super().__init__(stream)
        self.chain = chain
        self.covers: list[tuple[CheckpointHead, bytes]] | None = []  # None once restored
        #: Called with the offset the chain reaches each time it reaches further.
        self.on_covered: Callable[[int], None] | None = None

    def take(self, message: DeliveredMessage) -> None:
        if message.header.properties.message_type != CHECKPOINT_TYPE:
            return
        try:
            head = decode_checkpoint_head(message.body)
        except msgspec.DecodeError as exc:
            log.warning("a message in %s is not a checkpoint (%s); ignored", self.stream, exc)
            return
        offer = self.chain.offer(head)
        if offer is Offer.IGNORED:
            return
        if self.covers is not None:
            if offer is Offer.STARTS:
                self.covers.clear()
            self.covers.append((head, message.body))
            return
        if self.on_covered is not None and self.chain.covered is not None:
            self.on_covered(self.chain.covered)

    def restored(self, lower: int) -> tuple[list[bytes], CheckpointHead] | str:
        """The chain read, to load: its messages and its final one; or why there is none.

        ``lower`` is the first offset of the state window in the state log, which the chain
        must reach back to. From now on, messages read only move ``chain.covered`` on.
        """
        covers, self.covers = self.covers or [], None
        finals = [i for i, (head, _) in enumerate(covers) if head.final]
        if not finals:
            self.chain = Chain(self.chain.stream)
            return "no complete checkpoint in the window" if not covers else "no final checkpoint"
        chosen = covers[: finals[-1] + 1]
        final = chosen[-1][0]
        if chosen[0][0].first > lower:
            self.chain = Chain(self.chain.stream)
            return (
                f"the checkpoints begin at offset {chosen[0][0].first}, after the window's "
                f"first ({lower})"
            )
        self.chain = Chain(self.chain.stream, covered=final.last)
        return [body for _, body in chosen], final


def write(
    stream: str,
    covered: int | None,
    *,
    first_read: int,
    last: int,
    last_id: str,
    index: FreshIndex,
    flags: Iterable[tuple[int, str, datetime]],
    guard_records: list[EnactmentRecord],
    per_message: int = ENTRIES_PER_MESSAGE,
) -> Iterator[Checkpoint]:
    """The messages of one write, one at a time: everything read after ``covered`` up to
    ``last``. ``index`` must not lose entries from its front meanwhile.

    ``covered`` None: nothing to go on from; the write starts a chain at ``first_read`` (the
    first offset this worker read) and covers all it knows.
    """
    start = covered is None
    begin = first_read if covered is None else covered + 1
    low, high = index.position(begin), index.position(last + 1)
    notes = [note for note in flags if begin <= note[0] <= last]
    # Each message covers up to its last entry; the final one, up to ``last``.
    bounds = [low, *range(low + per_message, high, per_message), high]
    runs = list(itertools.pairwise(bounds))
    for number, (i, j) in enumerate(runs):
        final = number == len(runs) - 1
        end = last if final else index.offsets[j - 1]
        yield Checkpoint(
            stream=stream,
            first=begin,
            last=end,
            last_id=last_id if final else "",
            start=start and number == 0,
            final=final,
            ids=index.ids[i:j],
            offsets=index.offsets[i:j].tolist(),
            times_ms=index.times_ms[i:j].tolist(),
            flags=[(note[1], note[2]) for note in notes if begin <= note[0] <= end],
            guard_records=[encode(record) for record in guard_records] if final else [],
        )
        begin = end + 1


def load(state: StateFollower, bodies: list[bytes]) -> tuple[int, int]:
    """Load the chain's messages (``CheckpointFollower.restored``) into ``state``: (action ids,
    records for the guards). Raises ``msgspec.DecodeError`` (or ``UnicodeDecodeError``) before
    anything is loaded if one of them cannot be read: a load cut short would leave ids
    remembered whose records the guards then never learn from the state log.

    ``bodies`` is emptied: each is let go once loaded (a million ids are ~50 MB of them).
    """
    guard_records = [decode_record(r) for r in decode_checkpoint(bodies[-1]).guard_records]
    for body in bodies:
        decode_checkpoint(body)
    ids = 0
    bodies.reverse()
    while bodies:
        ids += state.load(decode_checkpoint(bodies.pop()))
    state.seed(guard_records)
    return ids, len(guard_records)
