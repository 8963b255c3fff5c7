"""Commands for the people around the worker: publish a plan, follow the records, see the
state of a namespace, work the review queue."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import aio_pika
import msgspec
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from schemas import EnactmentRecord, Plan, decode_plan, decode_record, encode
from schemas.codec import JSON
from schemas.control import ControlCommand
from worker.amqp.connection import BrokerLost, connect, one_shot
from worker.amqp.control import describe, read_control
from worker.amqp.publisher import PERSISTENT, bind_or_explain, publish_once
from worker.amqp.review import ReviewDesk, ReviewItem
from worker.amqp.topology import Names, queue_states
from worker.core.errors import OptimiserError
from worker.core.text import printable
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class PlanRejected(OptimiserError):
    """The plan file does not hold a valid plan."""


def read_plan(source: str) -> tuple[Plan, bytes]:
    """Read and validate a plan from a file, or stdin for ``-``."""
    try:
        body = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise PlanRejected(f"cannot read {source}: {exc.strerror}") from None
    try:
        return decode_plan(body), body
    except msgspec.DecodeError as exc:
        raise PlanRejected(f"{source} is not a valid plan: {exc}") from None


#: Width of the MODULE column unless the module names at hand need more.
MODULE_WIDTH: Final = 20


def record_header(module_width: int = MODULE_WIDTH) -> str:
    """The header line above ``format_record`` lines of the same width."""
    return f"{'TIME':<10} {'STATUS':<12} {'KIND':<16} {'MODULE':<{module_width}} DETAIL"


def plural(count: int, noun: str) -> str:
    """``1 action``, ``2 actions``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


async def _follow_queue(channel: AbstractChannel, names: Names) -> AbstractQueue:
    """A temporary queue ``N.tail.<random>`` (the operator role may declare those)."""
    return await channel.declare_queue(
        names.tail_queue(uuid.uuid4().hex[:12]), exclusive=True, auto_delete=True
    )


def format_record(record: EnactmentRecord, module_width: int = MODULE_WIDTH) -> str:
    """One aligned line for a record; the time is UTC, with its ``Z``. A replay (a record
    published again for an action enacted before) says so before its detail."""
    action = record.action
    when = record.attempted_at.astimezone(UTC).strftime("%H:%M:%SZ")
    replay = "[replay of the record of an earlier delivery] " if record.replay else ""
    return (
        f"{when:<10} {record.status.value:<12} {action.action_kind.value:<16} "
        f"{action.module_name:<{module_width}} {replay}{printable(record.detail)}"
    )


_UNSURE: Final = (
    "the plan may or may not be queued: check with `self-optimiser tail` before publishing it again"
)


async def publish_plan(
    settings: WorkerSettings,
    plan: Plan,
    body: bytes,
    *,
    wait_s: float | None,
    out: Callable[[str], None] = print,
) -> bool:
    """Publish ``plan``; with ``wait_s``, print its records as they land. True if all came."""
    names = Names(settings.namespace)
    published = False
    try:
        async with one_shot(settings, "publish-cli") as connection:
            channel = await connection.channel(publisher_confirms=True)
            records = None
            if wait_s is not None:
                # Bound before publishing, so no record can slip past.
                records = await _follow_queue(channel, names)
                await bind_or_explain(records, names.results_exchange, "#", names.namespace)
            await publish_once(
                channel,
                names.plans_exchange,
                aio_pika.Message(
                    body, content_type=JSON, delivery_mode=PERSISTENT, message_id=plan.plan_id
                ),
                namespace=names.namespace,
                timeout_s=settings.publish_timeout_s,
                if_unconfirmed=_UNSURE,
            )
            published = True
            out(
                f"published plan {plan.plan_id} ({plural(len(plan.actions), 'action')}) to "
                f"{names.plans_exchange}"
            )
            if records is None:
                return True
            out(
                f"waiting up to {wait_s:g}s for {plural(len(plan.actions), 'record')} "
                f"(Ctrl-C stops waiting)"
            )
            out(record_header(_width(plan)))
            return await _await_records(records, plan, names, wait_s or 0.0, out)
    except BrokerLost as lost:
        raise BrokerLost(
            f"{lost}: "
            + (
                f"plan {plan.plan_id} was published (the broker confirmed it); `self-optimiser "
                f"tail` shows its records"
                if published
                else _UNSURE
            )
        ) from None


async def _await_records(
    queue: aio_pika.abc.AbstractQueue,
    plan: Plan,
    names: Names,
    wait_s: float,
    out: Callable[[str], None],
) -> bool:
    expected = len(plan.actions)
    seen: set[str] = set()
    try:
        async with asyncio.timeout(wait_s), queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                record = _record_of(message)
                if record is None or record.plan_id != plan.plan_id:
                    continue
                seen.add(record.action.action_id)
                out(format_record(record, _width(plan)))
                if len(seen) == expected:
                    return True
    except TimeoutError:
        out(
            f"only {len(seen)} of {expected} records within {wait_s:g}s: is a worker "
            f"(`self-optimiser run`) consuming {names.plans_queue}?"
        )
    return False


def _width(plan: Plan) -> int:
    return max(MODULE_WIDTH, *(len(a.module_name) for a in plan.actions))


def _record_of(message: AbstractIncomingMessage) -> EnactmentRecord | None:
    try:
        return decode_record(message.body)
    except msgspec.DecodeError:
        log.warning("a message on the results exchange is not a record: %r", message.body[:200])
        return None


async def tail_records(
    settings: WorkerSettings,
    *,
    kind: str | None,
    status: str | None,
    module: str | None,
    as_json: bool,
    module_pattern: str | None = None,
    out: Callable[[str], None] = print,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    stop: asyncio.Event | None = None,
) -> None:
    """Follow ``N.results`` through a temporary queue bound to the matching routing keys.

    The queue goes with the connection: when the broker goes away ``say`` tells, once, and
    once more when it is back, naming the span whose records were missed.
    """
    names = Names(settings.namespace)
    pattern = f"{kind or '*'}.{status or '*'}.{module or module_pattern or '#'}"
    connection = await connect(settings, "tail-cli", rounds_level=logging.DEBUG)
    lost_at: list[datetime] = []

    def on_lost(_sender: object, exc: BaseException | None = None) -> None:
        if exc is None or lost_at:  # closed by us, or already said
            return
        lost_at.append(datetime.now(UTC))
        say(
            f"lost the broker at {settings.safe_url} ({type(exc).__name__}); records published "
            f"until it is back are missed"
        )

    def on_back(_sender: object) -> None:
        if lost_at:
            since = lost_at.pop()
            say(
                f"the broker at {settings.safe_url} is back after {_seconds(since)}: records "
                f"published between {_utc(since)} and {_utc(datetime.now(UTC))} were missed"
            )

    connection.close_callbacks.add(on_lost)
    connection.reconnect_callbacks.add(on_back)
    try:
        channel = await connection.channel()
        queue = await _follow_queue(channel, names)
        await bind_or_explain(queue, names.results_exchange, pattern, names.namespace)
        log.info("following %s with pattern %r", names.results_exchange, pattern)
        if not as_json:
            out(record_header(max(MODULE_WIDTH, len(module or ""))))

        stop = stop or asyncio.Event()

        async def show(message: AbstractIncomingMessage) -> None:
            async with message.process():
                record = _record_of(message)
                if record is None:
                    return
                try:
                    width = max(MODULE_WIDTH, len(module or ""))
                    out(encode(record).decode() if as_json else format_record(record, width))
                except BrokenPipeError:  # `tail | head` has read enough
                    stop.set()

        await queue.consume(show)
        await stop.wait()
    finally:
        connection.close_callbacks.discard(on_lost)
        # Bounded: a stopped `tail` must end even if the broker never answers the close.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.connect_timeout_s):
                await connection.close()


def _utc(moment: datetime) -> str:
    return moment.strftime("%H:%M:%SZ")


def _seconds(since: datetime) -> str:
    return f"{(datetime.now(UTC) - since).total_seconds():.0f}s"


async def show_status(
    settings: WorkerSettings, *, as_json: bool, out: Callable[[str], None] = print
) -> None:
    """The pause state and the depth of every queue people watch, read from the broker."""
    from worker.ops.breakers import format_breakers, read_breakers  # noqa: PLC0415 - a cycle

    names = Names(settings.namespace)
    control = await read_control(settings)
    breakers = await read_breakers(settings)
    async with one_shot(settings, "status-cli") as connection:
        states = await queue_states(connection, names.watched)
    if as_json:
        report = {
            "namespace": names.namespace,
            "paused": control is not None and control.command is ControlCommand.PAUSE,
            "control": msgspec.to_builtins(control) if control else None,
            "queues": {
                label: (
                    {"name": names.watched[label], "messages": s.messages, "consumers": s.consumers}
                    if s
                    else None
                )
                for label, s in states.items()
            },
            "breakers": [dataclasses.asdict(view) for view in breakers],
        }
        out(msgspec.json.encode(report).decode())
        return
    out(f"namespace {names.namespace} on {settings.safe_url}")
    out(f"  state    {describe(control)}")
    if breakers:
        out(f"  breakers {len(breakers)} open (`self-optimiser breakers reset MODULE KIND`):")
        for line in format_breakers(breakers).splitlines():
            out(f"    {line}")
    else:
        out("  breakers none open")
    for label, state in states.items():
        queue = names.watched[label]
        if state is None:
            out(f"  {label:<8} {queue}: does not exist (start `self-optimiser run` once)")
            continue
        line = f"  {label:<8} {queue}: {state.messages} ready"
        if label == "plans":
            line += (
                f", {state.consumers} worker(s) consuming (one active, the others on standby)"
                if state.consumers
                else ", NO worker consuming"
            )
        out(line)


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
