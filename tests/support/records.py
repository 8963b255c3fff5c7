"""Many plans at once, and every record they give, for the failover, hostile and soak tests."""

from __future__ import annotations

import asyncio

import aio_pika

from schemas import EnactmentRecord, decode_record

PLANS = 40
ACTIONS_PER_PLAN = 3


def spread_plans(prefix: str, count: int = PLANS) -> list[dict[str, object]]:
    """Plans of REDUCE_LOAD actions, each on a module of its own (no cool-down between them)."""
    plans = []
    for p in range(count):
        plan_id = f"{prefix}{p}"
        plans.append(
            {
                "plan_id": plan_id,
                "actions": [
                    {"action_id": f"{plan_id}-{i}", "module_name": f"{plan_id}.m{i}",
                     "action_kind": "REDUCE_LOAD"}
                    for i in range(ACTIONS_PER_PLAN)
                ],
            }
        )  # fmt: skip
    return plans


class RecordLog:
    """Every record that lands on a results queue, from a consumer that runs all along."""

    def __init__(self) -> None:
        self.records: list[EnactmentRecord] = []

    async def follow(self, queue: aio_pika.abc.AbstractQueue) -> None:
        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            self.records.append(decode_record(message.body))

        await queue.consume(take, no_ack=True)

    def action_ids(self) -> set[str]:
        return {r.action.action_id for r in self.records}

    async def until_all(self, expected: set[str], timeout: float = 90.0) -> None:
        async with asyncio.timeout(timeout):
            while not expected <= self.action_ids():
                await asyncio.sleep(0.1)
