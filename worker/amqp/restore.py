"""Restoring the guardrail state and the pause state before a single plan is consumed.

The state log is read from the state window's start (from the checkpoints of that window, then
the records after them, where there are checkpoints), and the control stream from its first
message, up to a marker of this worker's. If either cannot be read to its end, the worker fails
closed: it consumes nothing, says why, and tries again with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import aiormq
import msgspec
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from worker.amqp import checkpoints
from worker.amqp.checkpoints import Chain, CheckpointFollower
from worker.amqp.context import Context
from worker.amqp.control import ControlFollower
from worker.amqp.errors import BROKER_ERRORS, StreamUnavailable
from worker.amqp.offsets import offset_at, read_offsets
from worker.amqp.state import StateFollower
from worker.amqp.streams import StreamFollower, caught_up, explain

log = logging.getLogger(__name__)

#: Checkpoints are read from this long before the state window: the broker's clock, which
#: stamps the stream, may be behind the worker's.
CHECKPOINT_MARGIN_S: Final = 60.0
#: The longest wait between two attempts.
RETRY_MAX_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Restored:
    """The state is read: the checkpoints' follower goes on (None: no checkpoints)."""

    checkpoints: CheckpointFollower | None


class Restore:
    """Reads the state streams on ``connection`` (the consuming one: the publishing one, where
    the markers go out, may be blocked by a resource alarm; the reading one must never be)."""

    def __init__(
        self,
        context: Context,
        connection: AbstractRobustConnection,
        *,
        markers: AbstractExchange,
        checkpoint_exchange: AbstractExchange,
        say: Callable[[str], None],
    ) -> None:
        self._settings, self._names, self._clock = context.settings, context.names, context.clock
        self._connection = connection
        self._markers = markers
        self._checkpoint_exchange = checkpoint_exchange
        self._say = say  # how far it got, for /readyz

    async def run(
        self, state: StateFollower, control: ControlFollower, stop: asyncio.Event
    ) -> Restored | None:
        """Follow both streams, caught up; None if stopped first."""
        settings = self._settings
        delay = 1.0
        while not stop.is_set():
            self._say("restoring guardrail state")
            since = self._clock.now() - timedelta(seconds=settings.state_window_s)
            followers: list[StreamFollower] = [state, control]
            try:
                reader, start = await self._from_checkpoints(state, since)
                if reader is not None:
                    followers.append(reader)
                await state.follow(self._connection, offset=since if start is None else start)
                await control.follow(self._connection, offset="first")
                await caught_up(
                    self._markers, [state, control], settings.state_timeout_s,
                    progress=self._progress,
                )  # fmt: skip
                control.caught_up()
                log.info(
                    "state restored from %s: %d records since %s, %d action ids remembered",
                    state.stream, state.records_read,
                    since.isoformat(timespec="seconds") if start is None else f"offset {start}",
                    len(state.memory),
                )  # fmt: skip
                return Restored(reader)
            except (StreamUnavailable, *BROKER_ERRORS) as exc:
                for follower in followers:
                    await follower.close()
                said = f"not consuming: guardrail state not restored ({explain(exc)})"
                self._say(said)
                log.error("%s; retrying in %.0fs", said, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, RETRY_MAX_S)
        return None

    def _progress(self, read: int, seconds: float) -> None:
        """A restore still under way: say how far it got, in the log and on ``/readyz``."""
        said = (
            f"restoring guardrail state: {read:,} messages read in {seconds:.0f}s "
            f"({read / max(seconds, 1e-3):,.0f}/s)"
        )
        self._say(said)
        log.info("%s", said)

    async def _from_checkpoints(
        self, state: StateFollower, since: datetime
    ) -> tuple[CheckpointFollower | None, int | None]:
        """Load the checkpoints of the state window into ``state``: (their follower, the
        offset of the state log to read on from; None: read the window whole)."""
        settings, names, connection = self._settings, self._names, self._connection
        if settings.checkpoint_records == 0:
            return None, None
        reader = CheckpointFollower(names.checkpoints, Chain(names.results_log))
        try:
            await reader.follow(connection, offset=since - timedelta(seconds=CHECKPOINT_MARGIN_S))
        except aiormq.exceptions.ChannelNotFoundEntity:
            log.warning(
                "stream %s does not exist: the state is read without checkpoints, and none are "
                "written (load this version's definitions: `self-optimiser definitions`)",
                names.checkpoints,
            )
            return None, None
        try:
            await caught_up(
                self._checkpoint_exchange, [reader], settings.state_timeout_s,
                progress=self._progress,
            )  # fmt: skip
            lower = await offset_at(
                connection, self._markers, names.results_log, since, settings.fence_timeout_s
            )
        except BaseException:
            await reader.close()
            raise
        chosen = reader.restored(lower)
        if isinstance(chosen, str):
            log.info("reading the state window of %s whole: %s", names.results_log, chosen)
            return reader, None
        bodies, final = chosen
        del chosen
        try:
            there = await read_offsets(
                connection, names.results_log, [final.last], settings.fence_timeout_s
            )
            found = there[final.last].header.properties.message_id or ""
        except StreamUnavailable as exc:
            found = f"nothing ({exc})"
        if found != final.last_id:
            reader.chain = Chain(names.results_log)
            log.warning(
                "the checkpoints name %r at offset %d of %s, where it holds %s (the stream was "
                "declared anew?): reading the state window whole",
                final.last_id, final.last, names.results_log, found,
            )  # fmt: skip
            return reader, None
        messages = len(bodies)
        try:
            ids, guard_records = checkpoints.load(state, bodies)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            reader.chain = Chain(names.results_log)
            log.warning("a checkpoint in %s cannot be read (%s): reading the state window of "
                        "%s whole", names.checkpoints, exc, names.results_log)  # fmt: skip
            return reader, None
        log.info(
            "checkpoints of %s up to offset %d loaded: %d messages, %d action ids, %d records "
            "for the guards", names.results_log, final.last, messages, ids, guard_records,
        )  # fmt: skip
        return reader, final.last + 1
