"""Crashes and failover with workers as real processes: nothing lost, nothing enacted twice.

The subsystem is served in the test process and counts what it is really asked to do, per
action id: that count must be exactly one for every action, whatever happened to the worker.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import aio_pika
import pytest

from schemas import EnactmentStatus
from schemas.commands import SubsystemCommand
from tests.support.broker import Broker, rabbitmqctl
from tests.support.factories import plan_of
from tests.support.processes import DELIVERY_ONLY, WorkerProcess
from tests.support.records import ACTIONS_PER_PLAN, RecordLog, spread_plans
from tests.support.subsystems import CountingLoad
from tests.support.workers import ServerStarter
from worker import SubsystemResult, Subsystems
from worker.subsystems.server import SubsystemServer


@dataclass
class Counted:
    """A served load shedder that counts what it applies, and every record that lands."""

    load: CountingLoad
    server: SubsystemServer
    log: RecordLog

    async def until_applied(self, count: int) -> None:
        async with asyncio.timeout(60):
            while len(self.load.applied) < count:
                await asyncio.sleep(0.01)


@pytest.fixture
async def counted(broker: Broker, serve: ServerStarter) -> Counted:
    load = CountingLoad(pause_s=0.02)
    server = await serve(Subsystems(load=load))
    log = RecordLog()
    await log.follow(await broker.results_queue())
    return Counted(load, server, log)


def assert_at_most_once_and_never_claimed(load: CountingLoad, log: RecordLog) -> None:
    """Every action applied once at most, and no record claims a change the subsystem did not
    make. A command in flight when the broker or the connections go is lost with the
    subsystem's auto-delete queue: its action is FAILED (no answer in time) or SKIPPED (nobody
    was listening while the server reconnected), never SUCCESS. (The reverse, applied but
    FAILED because the reply was lost, is the late change the README admits.)"""
    assert set(load.applied.values()) <= {1}, "an action was enacted twice"
    for record in log.records:
        if record.action.action_id not in load.applied:
            assert record.status in (EnactmentStatus.FAILED, EnactmentStatus.SKIPPED), record


def report(what: str, load: CountingLoad, log: RecordLog, server_received: int) -> str:
    copies = Counter(r.action.action_id for r in log.records)
    not_applied = sorted(
        {(r.action.action_id, r.status.value, r.detail) for r in log.records if not r.replay}
        - {(r.action.action_id, "SUCCESS", r.detail) for r in log.records}
    )
    return (
        f"{what}: {len(load.applied)} actions applied, max {max(load.applied.values())} time(s) "
        f"each; {len(log.records)} records for {len(copies)} actions "
        f"({sum(1 for r in log.records if r.replay)} replays); "
        f"{server_received} commands received by the subsystem"
        + "".join(f"\n  not applied: {each}" for each in not_applied if each[1] != "SUCCESS")
    )


async def test_sigkill_mid_plan_then_restart_enacts_every_action_exactly_once(
    broker: Broker, amqp_url: str, counted: Counted
) -> None:
    load, server, log = counted.load, counted.server, counted.log
    plans = spread_plans("k")
    for plan in plans:
        await broker.publish_plan(plan)

    first = await WorkerProcess(amqp_url, broker.names.namespace, **DELIVERY_ONLY).start()
    await first.wait_consuming()
    await counted.until_applied(20)
    first.kill()
    await first.wait()

    second = await WorkerProcess(amqp_url, broker.names.namespace, **DELIVERY_ONLY).start()
    expected = {f"{p['plan_id']}-{i}" for p in plans for i in range(ACTIONS_PER_PLAN)}
    await log.until_all(expected)
    assert await second.stop() == 0

    print(report("sigkill", load, log, server.received))
    assert set(load.applied) == expected
    assert set(load.applied.values()) == {1}, "an action was enacted twice"
    assert log.action_ids() == expected, "an action has no record"
    assert await broker.depth(broker.names.plans_queue) == 0


async def test_the_standby_takes_over_when_the_active_worker_dies_and_keeps_its_guardrails(
    broker: Broker, amqp_url: str, counted: Counted
) -> None:
    load, server, log = counted.load, counted.server, counted.log
    active = await WorkerProcess(amqp_url, broker.names.namespace, **DELIVERY_ONLY).start()
    await active.wait_consuming()
    standby = await WorkerProcess(amqp_url, broker.names.namespace, **DELIVERY_ONLY).start()
    await standby.wait_consuming()  # registered; the broker keeps it idle while active lives

    plans = spread_plans("f")
    for plan in plans:
        await broker.publish_plan(plan)
    await counted.until_applied(20)
    active.kill()
    killed_at = asyncio.get_running_loop().time()
    applied_at_kill = len(load.applied)
    async with asyncio.timeout(30):
        while len(load.applied) <= applied_at_kill + 1:
            await asyncio.sleep(0.01)
    takeover_s = asyncio.get_running_loop().time() - killed_at

    expected = {f"{p['plan_id']}-{i}" for p in plans for i in range(ACTIONS_PER_PLAN)}
    await log.until_all(expected)
    # Right after the failover, a module the dead worker changed is still cooling down.
    done_by_active = next(r for r in log.records if r.status is EnactmentStatus.SUCCESS)
    probe = plan_of("REDUCE_LOAD", plan_id="probe")
    probe["actions"][0]["module_name"] = done_by_active.action.module_name  # type: ignore[index]
    await broker.publish_plan(probe)
    await log.until_all({"probe-0"})
    [probed] = [r for r in log.records if r.action.action_id == "probe-0"]
    assert await standby.stop() == 0

    print(report("failover", load, log, server.received), f"; takeover in {takeover_s:.2f}s")
    assert takeover_s < 10
    assert set(load.applied.values()) == {1}, "an action was enacted twice"
    assert log.action_ids() >= expected
    assert probed.status is EnactmentStatus.RATE_LIMITED


async def test_a_plan_that_keeps_crashing_the_worker_ends_in_the_dead_letter_queue(
    broker: Broker, amqp_url: str
) -> None:
    broker.delivery_limit = 2
    log = RecordLog()
    await log.follow(await broker.results_queue())
    worker: list[WorkerProcess] = []

    # A load shedder that brings down whichever worker asks it about module "poison".
    commands = await broker.channel.declare_queue(
        broker.names.command_queue("load"), auto_delete=True
    )
    await commands.bind(broker.names.commands_exchange, "load.*")

    async def shed(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            if json.loads(message.body)["module"] == "poison":
                worker[-1].kill()
                return
            reply = {"action_id": message.message_id, "outcome": "SUCCESS", "detail": "shed"}
            await broker.channel.default_exchange.publish(
                aio_pika.Message(json.dumps(reply).encode(), correlation_id=message.correlation_id),
                routing_key=message.reply_to or "",
            )

    await commands.consume(shed)
    dead_letters: list[aio_pika.abc.AbstractIncomingMessage] = []
    dead_queue = await broker.channel.declare_queue(broker.names.dead_queue, passive=True)

    async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        dead_letters.append(message)

    await dead_queue.consume(keep, no_ack=True)
    poison = plan_of("REDUCE_LOAD", plan_id="poison")
    poison["actions"][0]["module_name"] = "poison"  # type: ignore[index]
    await broker.publish_plan(poison)

    async def replace_dead_worker() -> None:
        # prefetch 1: plans prefetched behind a crashing one are charged a delivery too
        if not worker or worker[-1].returncode is not None:
            worker.append(
                await WorkerProcess(
                    amqp_url,
                    broker.names.namespace,
                    **DELIVERY_ONLY,
                    delivery_limit="2",
                    prefetch="1",
                ).start()
            )

    async with asyncio.timeout(120):
        while not dead_letters:
            await replace_dead_worker()
            await asyncio.sleep(0.2)
    await replace_dead_worker()  # the crash that dead-lettered it left none running
    after = spread_plans("after", count=3)
    for plan in after:
        await broker.publish_plan(plan)
    await log.until_all({f"after{p}-{i}" for p in range(3) for i in range(ACTIONS_PER_PLAN)})
    assert await worker[-1].stop() == 0

    [dead] = dead_letters
    assert json.loads(dead.body)["plan_id"] == "poison"
    assert dead.headers["x-first-death-reason"] == "delivery_limit"
    assert "poison-0" not in log.action_ids()
    print(f"poison: dead-lettered after {len(worker) - 1} worker start(s)")


@pytest.fixture
def broker_app() -> Iterator[None]:
    """Lets a test stop the broker's application; it is always started again afterwards."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl")
    try:
        yield
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


async def test_a_broker_restart_loses_nothing_and_enacts_nothing_twice(
    broker: Broker, amqp_url: str, counted: Counted, broker_app: None
) -> None:
    load, server, log = counted.load, counted.server, counted.log
    worker = await WorkerProcess(
        amqp_url, broker.names.namespace, **DELIVERY_ONLY, subsystem_timeout_s="5"
    ).start()
    await worker.wait_consuming()
    before, after = spread_plans("b", count=10), spread_plans("a", count=10)
    for plan in before:
        await broker.publish_plan(plan)
    await counted.until_applied(5)

    await asyncio.to_thread(rabbitmqctl, "stop_app")
    await asyncio.sleep(2)
    await asyncio.to_thread(rabbitmqctl, "start_app")
    await asyncio.to_thread(rabbitmqctl, "await_startup")
    async with asyncio.timeout(60):  # the test's own connection comes back too
        while True:
            try:
                for plan in after:
                    await broker.publish_plan(plan)
                break
            except Exception:
                await asyncio.sleep(0.5)

    expected = {f"{p['plan_id']}-{i}" for p in before + after for i in range(ACTIONS_PER_PLAN)}
    await log.until_all(expected, timeout=120)
    assert await worker.stop() == 0
    print(report("broker restart", load, log, server.received))
    assert_at_most_once_and_never_claimed(load, log)


async def test_all_connections_closed_mid_flight_loses_nothing_and_enacts_nothing_twice(
    broker: Broker, amqp_url: str, counted: Counted
) -> None:
    load, server, log = counted.load, counted.server, counted.log
    worker = await WorkerProcess(
        amqp_url, broker.names.namespace, **DELIVERY_ONLY, subsystem_timeout_s="5"
    ).start()
    await worker.wait_consuming()
    plans = spread_plans("c")
    for plan in plans:
        await broker.publish_plan(plan)
    await counted.until_applied(20)

    # Everyone's connections: the worker's, the subsystem's and this test's.
    await asyncio.to_thread(rabbitmqctl, "close_all_connections", "fault test")

    expected = {f"{p['plan_id']}-{i}" for p in plans for i in range(ACTIONS_PER_PLAN)}
    await log.until_all(expected, timeout=120)
    assert await worker.stop() == 0
    print(report("close_all_connections", load, log, server.received))
    assert_at_most_once_and_never_claimed(load, log)


class Silent:
    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_second_sigterm_ends_a_worker_that_is_still_draining(
    broker: Broker, amqp_url: str, serve: ServerStarter
) -> None:
    server = await serve(Subsystems(load=Silent()))
    await broker.declare_topology()
    worker = await WorkerProcess(
        amqp_url,
        broker.names.namespace,
        **DELIVERY_ONLY,
        subsystem_timeout_s="120",
        shutdown_grace_s="120",
    ).start()
    await worker.wait_consuming()
    await broker.publish_plan(plan_of("REDUCE_LOAD", plan_id="stuck"))
    async with asyncio.timeout(30):  # the plan is in hand, waiting on a silent subsystem
        while server.received < 1:
            await asyncio.sleep(0.05)

    worker.terminate()  # first: drain, which would take up to 120 s here
    await asyncio.sleep(1.0)
    assert worker.returncode is None
    worker.terminate()  # second: now
    assert await worker.wait(timeout=10) == 1
    assert any("second SIGTERM: exiting now" in line for line in worker.lines)
    async with asyncio.timeout(15):  # the broker returns it once it sees the connection gone
        while await broker.depth(broker.names.plans_queue) != 1:
            await asyncio.sleep(0.1)
