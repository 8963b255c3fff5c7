"""Group commit: the records of plans enacted back to back go out in one write.

A plan is acked once the broker has confirmed its records, on ``N.results`` and in the state
log. Publishing each plan's records on
their own costs a write, a deadline and a wait per plan: at one action a plan that was the
largest part of what the worker spent per action beyond a bare relay. The outbox holds what is
handed in while other plans are in hand (``holding``: delivered, waiting for their turn or
being enacted), and publishes it all at once when none is, when ``most`` hand-ins wait, or
``wait_s`` after the first of them, whichever comes first. A plan alone (an idle worker) goes
out at once; each caller still learns the outcome of each of its own messages. What the callers
hand in for the state log goes there as one message for the whole group (``state``): one
message to write and to read back for many records.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from worker.publisher import Outgoing, Publisher, PublishFailed

Outcome = bool | PublishFailed


class Sent(NamedTuple):
    """How each message went (True routed, False returned, or why not confirmed), and the
    group's message to the state log (None if the caller gave nothing for it)."""

    outcomes: list[Outcome]
    state: Outcome | None


class _HandedIn(NamedTuple):
    messages: Sequence[Outgoing]
    state: Sequence[bytes]
    sent: asyncio.Future[Sent]


class Outbox:
    def __init__(
        self,
        publisher: Publisher,
        *,
        state: Callable[[list[bytes]], Outgoing],
        most: int,
        wait_s: float,
    ) -> None:
        self._publisher = publisher
        self._state = state
        self._most = max(1, most)
        self._wait_s = wait_s
        self._held = 0
        self._pending: list[_HandedIn] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """While a plan in hand may still hand records in: what the others hand in waits."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if self._held == 0 and self._pending:
                # Not at once: the plan leaving usually hands its own records in next.
                asyncio.get_running_loop().call_soon(self._flush_if_free)

    async def publish(self, messages: Sequence[Outgoing], state: Sequence[bytes] = ()) -> Sent:
        """Publish ``messages``, and ``state`` in the group's message to the state log, in a
        write with others' perhaps."""
        sent: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
        self._pending.append(_HandedIn(messages, state, sent))
        if self._held == 0 or len(self._pending) >= self._most:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._wait_s, self._flush)
        return await sent

    def _flush_if_free(self) -> None:
        if self._held == 0:
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        taken, self._pending = self._pending, []
        if taken:
            task = asyncio.create_task(self._send(taken))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _send(self, taken: list[_HandedIn]) -> None:
        messages = [message for handed in taken for message in handed.messages]
        state = [body for handed in taken for body in handed.state]
        if state:
            messages.append(self._state(state))
        try:
            outcomes = await self._publisher.publish_bodies(messages)
        except asyncio.CancelledError:
            for handed in taken:
                handed.sent.cancel()
            raise
        except Exception as exc:  # publish_bodies reports failures as outcomes; a bug is one too
            failed = PublishFailed(f"publish failed: {type(exc).__name__}: {exc}")
            outcomes = [failed] * len(messages)
        state_outcome = outcomes[-1] if state else None
        start = 0
        for handed in taken:
            end = start + len(handed.messages)
            if not handed.sent.done():
                handed.sent.set_result(
                    Sent(outcomes[start:end], state_outcome if handed.state else None)
                )
            start = end
