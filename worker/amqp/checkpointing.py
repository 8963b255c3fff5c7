"""Writing checkpoints of the state log while this worker enacts plans (``worker.amqp.checkpoints``
says what they hold and how a restart reads them).

A standby does not write: the worker that enacts does. It writes a checkpoint of what it read of
the state log after the last one every ``checkpoint_records`` records or
``checkpoint_interval_s``, whichever comes first; not while another worker's checkpoint covers
all it read, nor while its own last one is not read back yet (unless it was lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

import aiormq

from schemas.logs import CHECKPOINT_CONTENT_TYPE, CHECKPOINT_TYPE, encode_checkpoint
from worker.amqp.checkpoints import CheckpointFollower, write
from worker.amqp.context import Context
from worker.amqp.errors import BROKER_ERRORS, PublishFailed
from worker.amqp.publisher import PERSISTENT, Publisher
from worker.amqp.state import StateFollower

log = logging.getLogger(__name__)

#: A checkpoint written and not read back within this long was lost by the stream: written
#: again.
CHECKPOINT_READ_BACK_S: Final = 30.0
#: How often the writer looks whether one is due.
LOOK_EVERY_S: Final = 1.0
_PROPERTIES: Final = aiormq.spec.Basic.Properties(
    content_type=CHECKPOINT_CONTENT_TYPE,
    delivery_mode=PERSISTENT,
    message_type=CHECKPOINT_TYPE,
)


class CheckpointWriter:
    """Writes checkpoints of ``state`` to exchange ``exchange`` while ``handled()`` grows."""

    def __init__(
        self,
        context: Context,
        reader: CheckpointFollower,
        publisher: Publisher,
        *,
        state: StateFollower,
        handled: Callable[[], int],
    ) -> None:
        self._reader = reader
        self._publisher = publisher
        self._exchange = context.names.checkpoints
        self._every_records = context.settings.checkpoint_records
        self._every_s = context.settings.checkpoint_interval_s
        self._clock = context.clock
        self._state = state
        self._handled = handled
        reader.on_covered = state.covered

    async def run(self) -> None:
        """Until cancelled."""
        handled, written_at, written_to = self._handled(), self._clock.monotonic(), -1
        while True:
            await asyncio.sleep(LOOK_EVERY_S)
            view = self._state.checkpoint_view()
            now = self._clock.monotonic()
            last = view.last_offset
            if self._handled() == handled or view.pending == 0 or last is None:
                continue  # a standby does not write: the active worker does
            covered = self._reader.chain.covered
            if covered is not None and covered >= last:
                continue  # another worker's checkpoint covers all this one read
            if view.pending < self._every_records and now - written_at < self._every_s:
                continue
            unread = written_to >= 0 and (covered is None or covered < written_to)
            if unread and now - written_at < CHECKPOINT_READ_BACK_S:
                continue  # the last one is not read back yet (not read back at all: lost)
            try:
                first, ids, guard_records = await self._write(covered, last)
            except (PublishFailed, *BROKER_ERRORS) as exc:
                log.warning("a checkpoint of %s was not confirmed (%s); trying again later",
                            self._state.stream, exc or type(exc).__name__)  # fmt: skip
                continue
            handled, written_at, written_to = self._handled(), now, last
            log.info(
                "checkpoint of %s, offsets %d to %d: %d action ids, %d records for the guards",
                self._state.stream, first, last, ids, guard_records,
            )  # fmt: skip

    async def _write(self, covered: int | None, last: int) -> tuple[int, int, int]:
        """One write, up to offset ``last``: (its first offset, action ids, guard records)."""
        first, ids, guard_records = -1, 0, 0
        state = self._state
        with state.holding():
            view = state.checkpoint_view()
            for message in write(
                state.stream,
                covered,
                first_read=view.first_offset,
                last=last,
                last_id=view.last_id,
                index=view.index,
                flags=view.flags,
                guard_records=view.guard_records(),
            ):
                first = message.first if first < 0 else first
                ids += len(message.ids)
                guard_records = len(message.guard_records)
                routed = await self._publisher.publish_body(
                    self._exchange, "", encode_checkpoint(message), _PROPERTIES
                )
                if not routed:
                    raise PublishFailed(f"nothing is bound to exchange {self._exchange}")
        return first, ids, guard_records
