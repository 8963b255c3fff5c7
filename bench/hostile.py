"""``python -m bench.hostile``: what a hostile planner gets done in ten seconds.

The issue's measurement, repeatable: ``self-optimiser run`` with its default settings, a
subsystem server that keeps score (``tests/support/hostile.py``), and a planner that publishes
plans of threshold swings, hot swaps and budget raises, each on a module name never seen before, as
fast as the worker takes them, for ``--seconds``. Prints what reached the subsystems: how often
and how far the detector threshold moved, its reversals, the modules swapped, the attempts on
a module that always fails, and the review items people got.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from contextlib import suppress

import aio_pika

from schemas.names import Names
from tests.support.hostile import Scoreboard, hostile_plan
from tests.support.processes import WorkerProcess
from worker import Subsystems
from worker.amqp.topology import declare, queue_states
from worker.subsystems.server import SubsystemServer


async def measure(url: str, seconds: float, settings: dict[str, str]) -> str:
    names = Names(f"hostile-{uuid.uuid4().hex[:8]}")
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel()
    await declare(channel, names)
    board = Scoreboard()
    server = SubsystemServer(url, names.namespace)
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(
        server.serve(
            Subsystems(detector=board, budget=board, load=board, orchestrator=board),
            stop=stop,
            ready=ready,
        )
    )
    await ready.wait()
    worker = await WorkerProcess(url, names.namespace, **settings).start()
    try:
        await worker.wait_consuming()
        plans = await channel.get_exchange(names.plans_exchange)
        loop = asyncio.get_running_loop()
        end, sent = loop.time() + seconds, 0
        while loop.time() < end:
            body = json.dumps(hostile_plan(f"h{sent}", broken_first=sent == 0)).encode()
            await plans.publish(aio_pika.Message(body, content_type="application/json"), "")
            sent += 1
            await asyncio.sleep(0.005)
        await asyncio.sleep(2.0)  # the last plans in flight
        review = (await queue_states(connection, {"review": names.review_queue}))["review"]
        reviews = review.messages if review else 0
        return f"{sent} plans in {seconds:g}s: {board.summary()}; {reviews} review items"
    finally:
        await worker.stop()
        stop.set()
        await serving
        for queue in names.queues:
            with suppress(Exception):
                await channel.queue_delete(queue)
        for exchange in names.exchanges:
            with suppress(Exception):
                await channel.exchange_delete(exchange)
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="a worker setting (OPTIMISER_<NAME>), e.g. cool_down_s=0",
    )  # fmt: skip
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    print(asyncio.run(measure(args.url, args.seconds, settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
