"""The floor: a bare aio-pika relay, written as well as aio-pika allows.

For each plan on ``N.plans``: decode it (msgspec, the same schemas), publish one persistent,
confirmed, mandatory record per action to ``N.results`` (all of a plan's publishes in flight
together), and ack the plan once every confirm is in; a failed publish nacks it back to the
queue. No guardrails, no state, no subsystems, no metrics.

``python -m bench.relays.aiopika_relay URL NAMESPACE PREFETCH``; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from schemas import EnactmentRecord, EnactmentStatus, decode_plan, encode, routing_key
from schemas.names import Names
from worker.cli import loop_factory


async def relay(url: str, namespace: str, prefetch: int) -> None:
    names = Names(namespace)
    connection = await aio_pika.connect_robust(url)
    consuming = await connection.channel()
    await consuming.set_qos(prefetch_count=prefetch)
    publishing = await connection.channel(publisher_confirms=True)
    results = await publishing.get_exchange(names.results_exchange)
    plans = await consuming.get_queue(names.plans_queue)

    async def handle(message: AbstractIncomingMessage) -> None:
        try:
            plan = decode_plan(message.body)
            now = datetime.now(UTC)
            records = [
                EnactmentRecord(
                    plan_id=plan.plan_id,
                    action=action,
                    status=EnactmentStatus.SKIPPED,
                    detail="relayed",
                    attempted_at=now,
                )
                for action in plan.actions
            ]
            await asyncio.gather(
                *(
                    results.publish(
                        aio_pika.Message(
                            encode(record),
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=record.action.action_id,
                            headers={"plan_id": plan.plan_id},
                        ),
                        routing_key=routing_key(record),
                        mandatory=True,
                        timeout=10,
                    )
                    for record in records
                )
            )
        except Exception:
            await message.nack(requeue=True)
            raise
        await message.ack()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await plans.consume(handle)
    await stop.wait()
    await connection.close()


if __name__ == "__main__":
    # The loop the worker runs on (uvloop on Linux), so that the ratio compares the code.
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(relay(sys.argv[1], sys.argv[2], int(sys.argv[3])))
