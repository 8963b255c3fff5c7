"""The kill switch, as the worker reads it: operators pause and resume every worker of a namespace.

``self-optimiser pause`` and ``resume`` (``worker.ops.control``) publish a ``ControlMessage`` to
exchange ``N.control``; the stream ``N.control`` keeps them all. A worker reads that stream from
its first message before it consumes a plan (``ControlFollower``), so the last pause or resume is
the state across restarts and failovers, and keeps following it: a pause takes effect from the
next action enacted. While paused, plans are still consumed and acked; every action is SKIPPED
"paused: <reason>".
"""

from __future__ import annotations

import logging
from datetime import UTC

import msgspec
from aiormq.abc import DeliveredMessage

from schemas.control import ControlCommand, ControlMessage, decode_control
from schemas.names import Names
from worker.amqp.streams import StreamFollower
from worker.core.optimiser import AsyncSelfOptimiser
from worker.core.text import printable

log = logging.getLogger(__name__)


class ControlFollower(StreamFollower):
    """Follows ``N.control``; the last pause or resume read is ``current``.

    With an ``optimiser``, each one read pauses or resumes it.
    """

    read_again_from_first = True

    def __init__(self, names: Names, optimiser: AsyncSelfOptimiser | None = None) -> None:
        super().__init__(names.control)
        self._optimiser = optimiser
        self.current: ControlMessage | None = None  # the last pause or resume
        self.resets: list[ControlMessage] = []  # breaker resets, in order
        self.live = False  # set once caught up: from then on each change is logged
        # What was read already must never be applied again (a stale resume would lift a pause
        # in force) when the stream is read again from its start after a reconnect or a cancel.
        # Control messages are few: each one is known by its body.
        self._seen: set[bytes] = set()

    @property
    def paused(self) -> ControlMessage | None:
        """The pause in force, or None."""
        current = self.current
        return current if current is not None and current.command is ControlCommand.PAUSE else None

    def take(self, message: DeliveredMessage) -> None:
        if message.body in self._seen:
            return
        self._seen.add(message.body)
        try:
            control = decode_control(message.body)
        except msgspec.DecodeError as exc:
            log.warning("a message in %s is not a pause or resume (%s); ignored", self.stream, exc)
            return
        if control.command is ControlCommand.RESET_BREAKER:
            self._reset_breaker(control)
            return
        self.current = control
        if self._optimiser is not None:
            if control.command is ControlCommand.PAUSE:
                self._optimiser.pause(control.reason)
            else:
                self._optimiser.resume()
        if self.live:
            log.warning("%s", describe(control))

    def _reset_breaker(self, control: ControlMessage) -> None:
        if control.module is None or control.action_kind is None:
            log.warning("a reset_breaker in %s names no breaker; ignored", self.stream)
            return
        self.resets.append(control)
        if self._optimiser is not None:
            self._optimiser.reset_breaker(control.module, control.action_kind, control.issued_at)
        if self.live:
            log.warning(
                "breaker of %s on %s reset by %s: %s", control.action_kind.value,
                control.module, control.issued_by or "an operator", control.reason or "-",
            )  # fmt: skip

    def caught_up(self) -> None:
        self.live = True
        log.info("control state from %s: %s", self.stream, describe(self.current))


def describe(control: ControlMessage | None) -> str:
    """One sentence for an operator: the state a control message leaves behind."""
    if control is None:
        return "running (never paused)"
    when = control.paused_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    who = f" by {printable(control.issued_by)}" if control.issued_by else ""
    reason = printable(control.reason)
    if control.command is ControlCommand.PAUSE:
        return (
            f"PAUSED since {when}{who}: {reason or 'no reason given'} "
            f"(every action is SKIPPED until resumed)"
        )
    because = f": {reason}" if reason else ""
    return f"running (resumed {when}{who}{because})"
