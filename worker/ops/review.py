"""The review queue, as operators work it: list and show the pending items, ack the ones dealt
with, send one to the back of the queue."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import msgspec
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from schemas import ImprovementAction, decode_action
from schemas.names import Names
from worker.amqp.connection import one_shot
from worker.amqp.topology import queue_states
from worker.core.errors import OptimiserError
from worker.core.text import printable
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


#: Without a new item for this long, the queue is taken as read (another reader holds the rest).
IDLE_S: Final = 2.0


@dataclass(slots=True)
class ReviewItem:
    """One action waiting for a person; repeats of the same ``action_id`` counted in ``copies``."""

    action_id: str
    action: ImprovementAction | None  # None: the body is not an action
    plan_id: str
    flagged_at: datetime | None
    deliveries: int
    copies: int = 1
    messages: list[AbstractIncomingMessage] = field(default_factory=list, repr=False)

    def age(self, now: datetime) -> str:
        """How long it has waited, as ``45s``, ``12m05s``, ``3h07m`` or ``2d04h``."""
        if self.flagged_at is None:
            return "?"
        seconds = int(max(0.0, (now - self.flagged_at).total_seconds()))
        days, rest = divmod(seconds, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        if days:
            return f"{days}d{hours:02d}h"
        if hours:
            return f"{hours}h{minutes:02d}m"
        return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class ReviewDesk:
    """Takes every pending item off ``N.review`` without acking, so they can be looked at;
    whatever is not acked goes back to the queue, in its order, when the desk closes."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        settings: WorkerSettings,
        progress: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._names = Names(settings.namespace)
        self._progress = progress
        self._connection = connection
        self._taken: list[AbstractIncomingMessage] = []
        self._settled: set[int | None] = set()

    async def __aenter__(self) -> ReviewDesk:
        return self

    async def __aexit__(self, *_: object) -> None:
        # Nacked one by one, in delivery order, so the queue keeps its order.
        for message in self._taken:
            if message.delivery_tag not in self._settled:
                await message.nack(requeue=True)

    async def items(self) -> list[ReviewItem]:
        """Every pending item, oldest first, one per ``action_id``."""
        queue_name = self._names.review_queue
        pending = (await queue_states(self._connection, {"review": queue_name}))["review"]
        if pending is None:
            raise OptimiserError(
                f"queue {queue_name!r} does not exist: start `self-optimiser run` once "
                f"(namespace {self._names.namespace!r}) so that it declares it"
            )
        if pending.messages == 0:
            return []
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=0)  # all of them at once, none acked
        queue = await channel.get_queue(queue_name, ensure=False)
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(arrived.put)
        while len(self._taken) < pending.messages:
            try:
                async with asyncio.timeout(IDLE_S):
                    self._taken.append(await arrived.get())
            except TimeoutError:
                break
            if len(self._taken) % 1000 == 0:
                self._progress(f"read {len(self._taken)} of {pending.messages} review items")
        return _group(self._taken)

    async def ack(self, item: ReviewItem) -> None:
        """Done with: every copy of the item leaves the queue."""
        for message in item.messages:
            await message.ack()
            self._settled.add(message.delivery_tag)

    def requeue_last(self, item: ReviewItem) -> None:
        """Back to the queue after every other item (at its end, on the quorum queue)."""
        tags = {m.delivery_tag for m in item.messages}
        self._taken = [m for m in self._taken if m.delivery_tag not in tags] + item.messages


def _group(messages: list[AbstractIncomingMessage]) -> list[ReviewItem]:
    items: dict[str, ReviewItem] = {}
    for message in messages:
        try:
            action: ImprovementAction | None = decode_action(message.body)
        except msgspec.DecodeError:
            action = None
        action_id = action.action_id if action else (message.message_id or "<unreadable>")
        headers = message.headers or {}
        count = headers.get("x-delivery-count", 0)
        known = items.get(action_id)
        if known is not None:
            known.copies += 1
            known.messages.append(message)
            continue
        timestamp = message.timestamp
        items[action_id] = ReviewItem(
            action_id=action_id,
            action=action,
            plan_id=str(headers.get("plan_id", "")),
            flagged_at=timestamp.replace(tzinfo=UTC) if timestamp else None,
            deliveries=count if isinstance(count, int) else 0,
            messages=[message],
        )
    return list(items.values())


async def work_review(
    settings: WorkerSettings,
    verb: str,
    action_id: str | None,
    *,
    as_json: bool,
    out: Callable[[str], None] = print,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> bool:
    """``review list|show|ack|requeue``; False when the item asked for is not pending."""
    names = Names(settings.namespace)
    async with (
        one_shot(settings, "review-cli") as connection,
        ReviewDesk(connection, settings, progress) as desk,
    ):
        items = await desk.items()
        now = datetime.now(UTC)
        if verb == "list":
            _list_review(items, now, as_json=as_json, out=out)
            return True
        item = next((i for i in items if i.action_id == action_id), None)
        if item is None:
            out(
                f"no pending review item with action id {action_id!r} in {names.review_queue} "
                f"({len(items)} pending; `self-optimiser review list` shows them)"
            )
            return False
        if verb == "show":
            shown = msgspec.json.encode(_review_builtins(item, now)).decode()
            out(shown if as_json else _review_detail(item, now))
        elif verb == "ack":
            await desk.ack(item)
            copies = f" ({item.copies} copies)" if item.copies > 1 else ""
            out(f"acked {item.action_id}{copies}: it has left {names.review_queue}")
        elif verb == "requeue":
            desk.requeue_last(item)
            out(f"requeued {item.action_id}: back in {names.review_queue}, behind the others")
        else:  # pragma: no cover - the parser allows only these
            raise AssertionError(verb)
    return True


def _list_review(
    items: list[ReviewItem], now: datetime, *, as_json: bool, out: Callable[[str], None]
) -> None:
    # Oldest first by when each was flagged: the queue's own order changes with requeues.
    items = sorted(items, key=lambda i: (i.flagged_at is None, i.flagged_at or now))
    if as_json:
        for item in items:
            out(msgspec.json.encode(_review_builtins(item, now)).decode())
        return
    if not items:
        out("no review items pending")
        return
    rows = []
    for item in items:
        action = item.action
        rationale = printable(" ".join((action.rationale if action else "").split()))
        rows.append(
            (
                item.age(now),
                action.module_name if action else "<unreadable body>",
                printable(item.action_id) + (f" (x{item.copies})" if item.copies > 1 else ""),
                printable(item.plan_id),
                rationale[:60] + ("..." if len(rationale) > 60 else ""),
            )
        )
    header = ("AGE", "MODULE", "ACTION ID", "PLAN", "RATIONALE")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        out(" ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=False)) + f" {row[4]}")
    out(f"{len(items)} pending")


def _review_builtins(item: ReviewItem, now: datetime) -> dict[str, object]:
    return {
        "action_id": item.action_id,
        "plan_id": item.plan_id,
        "flagged_at": item.flagged_at.isoformat() if item.flagged_at else None,
        "age": item.age(now),
        "copies": item.copies,
        "deliveries": item.deliveries,
        "action": msgspec.to_builtins(item.action) if item.action else None,
    }


def _review_detail(item: ReviewItem, now: datetime) -> str:
    action = item.action
    lines = [
        f"action id   {printable(item.action_id)}",
        f"plan        {printable(item.plan_id) or '?'}",
        f"flagged     {item.flagged_at.isoformat() if item.flagged_at else '?'} "
        f"({item.age(now)} ago)",
        f"copies      {item.copies} (delivered {item.deliveries} time(s) before)",
    ]
    if action is None:
        body = item.messages[0].body[:500]
        lines.append(f"body        not an action: {body!r}")
        return "\n".join(lines)
    lines += [
        f"module      {action.module_name}",
        f"priority    {action.priority}",
        f"rationale   {printable(action.rationale) or '-'}",
        "parameters  "
        + (
            ", ".join(
                f"{printable(k)}={printable(v)}" for k, v in sorted(action.parameters.items())
            )
            or "-"
        ),
    ]
    return "\n".join(lines)
