"""Soak: a few thousand plans through a worker process while faults strike at random moments.

Marked ``slow``; ``.ci/run`` includes it. It prints what it counted, for the record.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter

import aio_pika

from tests.support.broker import Broker, rabbitmqctl
from tests.support.processes import DELIVERY_ONLY, WorkerProcess
from tests.support.records import RecordLog, spread_plans
from tests.support.subsystems import CountingLoad
from tests.support.workers import ServerStarter
from worker import Subsystems

SOAK_PLANS = int(os.environ.get("OPTIMISER_SOAK_PLANS", "2000"))
SOAK_TIMEOUT_S = 240.0


async def publish_all(broker: Broker, plans: list[dict[str, object]], faults: Counter[str]) -> None:
    """Each plan until the broker confirms it. The faults close this connection too: as a
    planner would, publish again what was not confirmed (a second copy of a plan is enacted
    once, or it is a bug). Each publish has a timeout: one caught in a reconnect can wait for
    ever (CI saw the soak hang past pytest's timeout after every action had its record)."""
    for plan in plans:
        while True:
            try:
                await broker.publish_plan(plan, timeout=5.0)
                break
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError):
                faults["plan_published_again"] += 1
                await asyncio.sleep(0.2)


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

    faults: Counter[str] = Counter()
    publishing = asyncio.create_task(publish_all(broker, plans, faults))
    workers = [worker]

    async def strike_until_done() -> None:
        while not expected <= log.action_ids():
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            if publishing.done():
                publishing.result()  # a publisher that failed: say so now, not at the timeout
            if expected <= log.action_ids():
                break
            if rng.random() < 0.5:
                faults["sigkill"] += 1
                workers[-1].kill()
                await workers[-1].wait()
                workers.append(
                    await WorkerProcess(
                        amqp_url, broker.names.namespace, **DELIVERY_ONLY, **settings
                    ).start()
                )
            else:
                faults["close_all_connections"] += 1
                await asyncio.to_thread(rabbitmqctl, "close_all_connections", "soak")

    loop = asyncio.get_running_loop()
    started = loop.time()

    # Within pytest's own timeout, so that a soak that stalls says where.
    async def soak() -> None:
        await strike_until_done()
        await publishing

    try:
        await asyncio.wait_for(soak(), timeout=SOAK_TIMEOUT_S)
    except TimeoutError:
        missing = sorted(expected - log.action_ids())
        raise AssertionError(
            f"{len(missing)} actions without a record (first {missing[:3]}), the planner "
            f"{'done' if publishing.done() else 'still publishing'}, after faults "
            f"{dict(faults)}; the last worker's last lines:\n" + "\n".join(workers[-1].lines[-80:])
        ) from None
    worker = workers[-1]
    elapsed = loop.time() - started
    assert await worker.stop() == 0

    not_applied = [
        r for r in log.records if r.action.action_id not in load.applied and not r.replay
    ]
    statuses = Counter(f"{r.status.value} ({r.guard or r.detail[:60]})" for r in not_applied)
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
    assert not [r for r in not_applied if r.status.value == "SUCCESS"]
