"""Soak: a few thousand plans through a worker process while faults strike at random moments.

Marked ``slow``; ``.ci/run`` includes it. It prints what it counted, for the record.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter

import pytest

from tests.broker import Broker, rabbitmqctl
from tests.conftest import ServerStarter
from tests.processes import DELIVERY_ONLY, WorkerProcess
from tests.test_failover import RecordLog, spread_plans
from tests.test_state import CountingLoad
from worker import Subsystems

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOAK_PLANS = int(os.environ.get("OPTIMISER_SOAK_PLANS", "2000"))


async def test_soak_with_random_faults_loses_nothing_and_enacts_nothing_twice(
    broker: Broker, amqp_url: str, serve: ServerStarter
) -> None:
    rng = random.Random(int(os.environ.get("OPTIMISER_SOAK_SEED", "7")))
    load = CountingLoad()
    server = await serve(Subsystems(load=load))
    log = RecordLog()
    await log.follow(await broker.results_queue())
    plans = spread_plans("s", count=SOAK_PLANS)
    expected = {f"{p['plan_id']}-{i}" for p in plans for i in range(3)}
    # A fault every 1 to 4 s redelivers the plans in hand each time: the default wait for a
    # takeover's in-flight records (5 s) would leave no time to enact. Here no old worker lives
    # on to send records late (it is killed, or it is this one, which checks its own).
    settings = {"subsystem_timeout_s": "5", "takeover_wait_s": "0.5"}
    worker = await WorkerProcess(
        amqp_url, broker.names.namespace, **DELIVERY_ONLY, **settings
    ).start()
    await worker.wait_consuming()

    async def publish() -> None:
        for plan in plans:
            await broker.publish_plan(plan)

    publishing = asyncio.create_task(publish())
    faults: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(480):
        while not expected <= log.action_ids():
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            if expected <= log.action_ids():
                break
            if rng.random() < 0.5:
                faults["sigkill"] += 1
                worker.kill()
                await worker.wait()
                worker = await WorkerProcess(
                    amqp_url, broker.names.namespace, **DELIVERY_ONLY, **settings
                ).start()
            else:
                faults["close_all_connections"] += 1
                await asyncio.to_thread(rabbitmqctl, "close_all_connections", "soak")
    await publishing
    elapsed = loop.time() - started
    assert await worker.stop() == 0

    not_applied = [
        r for r in log.records if r.action.action_id not in load.applied and not r.replay
    ]
    statuses = Counter(r.status.value for r in not_applied)
    print(
        f"soak: {SOAK_PLANS} plans, {len(expected)} actions in {elapsed:.0f}s; "
        f"faults {dict(faults)}; applied {len(load.applied)} (max "
        f"{max(load.applied.values())} each); {len(log.records)} records "
        f"({sum(r.replay for r in log.records)} replays); not applied {dict(statuses)}; "
        f"commands received {server.received}"
    )
    assert log.action_ids() == expected, "an action has no record"
    assert set(load.applied.values()) == {1}, "an action was enacted twice"
    # An action the subsystem did not apply never has a record that claims it did.
    assert "SUCCESS" not in statuses
