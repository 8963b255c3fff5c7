"""``self-optimiser tail``: follow the records of a namespace as they are published."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage

from schemas import encode
from schemas.names import Names
from worker.amqp.connection import connect
from worker.amqp.publisher import bind_or_explain
from worker.ops.format import MODULE_WIDTH, format_record, record_header, seconds_since, utc_time
from worker.ops.publish import follow_queue, record_of
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


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
                f"the broker at {settings.safe_url} is back after {seconds_since(since)}: records "
                f"published between {utc_time(since)} and {utc_time(datetime.now(UTC))} were missed"
            )

    connection.close_callbacks.add(on_lost)
    connection.reconnect_callbacks.add(on_back)
    try:
        channel = await connection.channel()
        queue = await follow_queue(channel, names)
        await bind_or_explain(queue, names.results_exchange, pattern, names.namespace)
        log.info("following %s with pattern %r", names.results_exchange, pattern)
        if not as_json:
            out(record_header(max(MODULE_WIDTH, len(module or ""))))

        stop = stop or asyncio.Event()

        async def show(message: AbstractIncomingMessage) -> None:
            async with message.process():
                record = record_of(message)
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
