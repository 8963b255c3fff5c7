"""Group commit: the records of plans enacted back to back go out in one write.

A plan is acked once the broker has confirmed its records, on ``N.results`` and in the state
log. Publishing each plan's records on their own costs a write, a deadline and a wait per plan:
at one action a plan that was the largest part of what the worker spent per action beyond a
bare relay. The outbox holds what is handed in while other plans are in hand (``holding``:
delivered, waiting for their turn or being enacted), and publishes it all at once when none
is, when ``most`` hand-ins wait, or ``wait_s`` after the first of them, whichever comes first.
A plan alone (an idle worker) goes out at once; each caller still learns the outcome of each
of its own messages.

What the callers hand in for the state log (``state``) goes there together, and one write of
it at a time: while one waits for its confirm, the next gathers everything handed in meanwhile.
A message of a stream costs the broker about as much to store and hand back as a plan costs
to deliver, so at one action a plan a message per group was a fifth of the broker's work;
gathered so, their number follows the confirm's round trip, not the traffic. An idle worker's
goes out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from worker.amqp.errors import PublishFailed
from worker.amqp.publisher import Outgoing, Publisher

Outcome = bool | PublishFailed


class Sent(NamedTuple):
    """How each message went (True routed, False returned, or why not confirmed), and the
    state log's (None if the caller gave nothing for it)."""

    outcomes: list[Outcome]
    state: Outcome | None


class _Messages(NamedTuple):
    messages: Sequence[Outgoing]
    sent: asyncio.Future[list[Outcome]]


class _State(NamedTuple):
    bodies: Sequence[bytes]
    sent: asyncio.Future[Outcome]


class Outbox:
    def __init__(
        self,
        publisher: Publisher,
        *,
        state: Callable[[list[bytes]], list[Outgoing]],
        most: int,
        wait_s: float,
    ) -> None:
        self.publisher = publisher
        self._state = state
        self._most = max(1, most)
        self._wait_s = wait_s
        self._held = 0
        self._pending: list[_Messages] = []
        self._state_pending: list[_State] = []
        self._state_in_flight = False
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
        """Publish ``messages``, and ``state`` in the state log's next message, in a write
        with others' perhaps."""
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[list[Outcome]] = loop.create_future()
        logged: asyncio.Future[Outcome] | None = None
        if state:
            logged = loop.create_future()
            self._state_pending.append(_State(state, logged))
        if messages:
            self._pending.append(_Messages(messages, sent))
            if self._held == 0 or len(self._pending) >= self._most:
                self._flush()
            elif self._timer is None:
                self._timer = loop.call_later(self._wait_s, self._flush)
        else:
            sent.set_result([])
            if not self._state_in_flight:
                self._flush()
        return Sent(await sent, None if logged is None else await logged)

    def _flush_if_free(self) -> None:
        if self._held == 0:
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        taken, self._pending = self._pending, []
        state: list[_State] = []
        if not self._state_in_flight:
            state, self._state_pending = self._state_pending, []
            self._state_in_flight = bool(state)
        if taken or state:
            task = asyncio.create_task(self._send(taken, state))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _send(self, taken: list[_Messages], state: list[_State]) -> None:
        messages = [message for handed in taken for message in handed.messages]
        logged = self._state([body for part in state for body in part.bodies]) if state else []
        try:
            outcomes = await self.publisher.publish_bodies(messages + logged)
        except asyncio.CancelledError:
            for handed in taken:
                handed.sent.cancel()
            for part in state:
                part.sent.cancel()
            raise
        except Exception as exc:  # publish_bodies reports failures as outcomes; a bug is one too
            failed = PublishFailed(f"publish failed: {type(exc).__name__}: {exc}")
            outcomes = [failed] * (len(messages) + len(logged))
        finally:
            if state:
                self._state_in_flight = False
        start = 0
        for handed in taken:
            end = start + len(handed.messages)
            if not handed.sent.done():
                handed.sent.set_result(outcomes[start:end])
            start = end
        if state:
            outcome = _together(outcomes[start:])
            for part in state:
                if not part.sent.done():
                    part.sent.set_result(outcome)
            if self._state_pending:  # handed in while these were in flight
                self._flush_state()

    def _flush_state(self) -> None:
        if self._pending and self._held == 0:
            self._flush()  # with the records that wait, in one write
            return
        state, self._state_pending = self._state_pending, []
        self._state_in_flight = True
        task = asyncio.create_task(self._send([], state))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)


def _together(outcomes: list[Outcome]) -> Outcome:
    """One outcome for several messages: the first failure, else returned if any was."""
    failed = next((o for o in outcomes if isinstance(o, PublishFailed)), None)
    if failed is not None:
        return failed
    return all(outcomes)
