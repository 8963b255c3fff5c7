"""The same relay written the way FastStream's documentation shows it: a pydantic model for the
message, a subscriber function, ``broker.publish`` for each record, FastStream acking the plan
when the function returns (and nacking it back to the queue when it raises).

Publisher confirms are on (FastStream's default channel), records persistent and mandatory, a
plan's publishes in flight together, as in the aio-pika relay.

``python -m bench.relays.faststream_relay URL NAMESPACE PREFETCH``; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from faststream import AckPolicy, FastStream
from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from pydantic import BaseModel

from worker.cli import loop_factory


class Action(BaseModel):
    action_id: str
    module_name: str
    action_kind: str
    parameters: dict[str, str] = {}
    priority: int = 0
    rationale: str = ""


class Plan(BaseModel):
    plan_id: str
    actions: list[Action]


class Record(BaseModel):
    plan_id: str
    action: Action
    status: str
    detail: str
    duration_s: float
    attempted_at: datetime
    replay: bool = False


def build(url: str, namespace: str, prefetch: int) -> FastStream:
    broker = RabbitBroker(url, log_level=30)
    results = RabbitExchange(f"{namespace}.results", type=ExchangeType.TOPIC, declare=False)

    @broker.subscriber(
        RabbitQueue(f"{namespace}.plans", declare=False),
        channel=Channel(prefetch_count=prefetch),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def relay(plan: Plan) -> None:
        now = datetime.now(UTC)
        await asyncio.gather(
            *(
                broker.publish(
                    Record(
                        plan_id=plan.plan_id,
                        action=action,
                        status="SKIPPED",
                        detail="relayed",
                        duration_s=0.0,
                        attempted_at=now,
                    ),
                    exchange=results,
                    routing_key=f"{action.action_kind}.SKIPPED.{action.module_name}",
                    persist=True,
                    mandatory=True,
                    message_id=action.action_id,
                    headers={"plan_id": plan.plan_id},
                    timeout=10,
                )
                for action in plan.actions
            )
        )

    return FastStream(broker)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(build(sys.argv[1], sys.argv[2], int(sys.argv[3])).run(log_level=30))
