"""Faults on a real broker: withheld confirms, SIGTERM, connections closed by the broker.

These use ``rabbitmqctl`` on the local broker, so they skip when it is not the one under test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
from collections import defaultdict
from collections.abc import Iterator

import aio_pika
import pytest

from schemas import EnactmentRecord
from schemas.commands import SubsystemCommand
from tests.support.broker import Broker, rabbitmqctl, worker_connection_pids
from tests.support.factories import no_op_plan, wait_for
from tests.support.paths import ROOT
from tests.support.processes import WorkerProcess
from tests.support.proxy import SilencingProxy
from tests.support.workers import WorkerStarter
from worker import OptimiserConfig, SubsystemResult, Subsystems

pytestmark = [
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl"),
]

#: The backoff's ceiling with its jitter, aio-pika's reconnect_interval, and the catch-up.
RECONNECT_WITHIN_S = 12.0


class MemoryAlarm:
    """A broker-wide memory alarm: RabbitMQ stops reading from every publishing connection."""

    def __init__(self) -> None:
        raw = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").strip()
        self.normal = raw if raw.replace(".", "", 1).isdigit() and float(raw) > 0 else "0.4"

    def raise_(self) -> None:
        rabbitmqctl("set_vm_memory_high_watermark", "0")

    def clear(self) -> None:
        rabbitmqctl("set_vm_memory_high_watermark", self.normal)


@pytest.fixture
def memory_alarm() -> Iterator[MemoryAlarm]:
    # A plain (not async) fixture: its clean-up runs even when the test dies on a timeout,
    # and a broker left in alarm would block every later test.
    alarm = MemoryAlarm()
    try:
        yield alarm
    finally:
        alarm.clear()


async def test_a_publish_whose_confirm_is_withheld_times_out_and_the_plan_is_not_acked(
    broker: Broker, start_worker: WorkerStarter, memory_alarm: MemoryAlarm
) -> None:
    results = await broker.results_queue()
    running = await start_worker(publish_timeout_s=1.0)
    # The alarm blocks this test's publishes too, so the plan goes in before it, into a
    # holding queue that dead-letters it into N.plans a moment later: broker-internal
    # routing, which the alarm does not stop.
    hold = await broker.channel.declare_queue(
        f"{broker.names.namespace}.hold",
        arguments={"x-message-ttl": 2000, "x-dead-letter-exchange": broker.names.plans_exchange},
    )
    broker.extra_queues.append(hold.name)
    await broker.channel.default_exchange.publish(
        aio_pika.Message(
            json.dumps(no_op_plan("withheld")).encode(), content_type="application/json"
        ),
        routing_key=hold.name,
    )
    await asyncio.to_thread(memory_alarm.raise_)

    # The worker still receives and enacts the plan; its record publishes get no confirm.
    await wait_for(
        lambda: running.metric("asi_optimiser_publish_failures_total", target="results") >= 2,
        timeout=30,
        what="record publishes to time out while the broker withholds confirms",
    )
    assert running.metric("asi_optimiser_plans_consumed_total", outcome="acked") == 0

    await asyncio.to_thread(memory_alarm.clear)
    await wait_for(
        lambda: running.metric("asi_optimiser_plans_consumed_total", outcome="acked") == 1,
        timeout=30,
        what="the plan acked once the broker confirms again",
    )
    records = await broker.records(results.name, expect=2, timeout=10)
    assert {r.plan_id for r in records} == {"withheld"}
    # Held, not returned to the queue: enacted once, its records published when they could be.
    assert running.metric("asi_optimiser_enact_calls_total") == 1
    await running.shutdown()
    assert await broker.depth(broker.names.plans_queue) == 0


async def test_the_worker_reconnects_after_the_broker_closes_its_connections(
    broker: Broker, start_worker: WorkerStarter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker")
    results = await broker.results_queue()
    running = await start_worker(publish_timeout_s=2.0)
    plans = [f"plan-{i}" for i in range(60)]

    async def publish_slowly() -> None:
        for plan_id in plans:
            await broker.publish_plan(no_op_plan(plan_id))
            await asyncio.sleep(0.02)

    publishing = asyncio.create_task(publish_slowly())
    await asyncio.sleep(0.4)
    pids = await asyncio.to_thread(worker_connection_pids, broker.names.namespace)
    assert len(pids) == 2, "expected the consume and publish connections"
    for pid in pids:
        await asyncio.to_thread(rabbitmqctl, "close_connection", pid, "fault test")

    # aio-pika reconnects within milliseconds here, too fast to see readiness drop by polling;
    # new connection pids show it. rabbitmqctl runs in a thread: the worker shares this loop.
    async with asyncio.timeout(30):
        while True:
            now = await asyncio.to_thread(worker_connection_pids, broker.names.namespace)
            if len(now) == 2 and not set(now) & set(pids):
                break
            await asyncio.sleep(0.2)
    await wait_for(lambda: running.worker.readiness()[0], timeout=30, what="readiness")
    await publishing
    # People read one line of the worker's own each way, not only the libraries' chatter.
    ours = [r for r in caplog.records if r.name == "worker.amqp.worker"]
    lost = [r for r in ours if r.getMessage().startswith("lost the broker at")]
    back = [r for r in ours if "is back: consuming plans again" in r.getMessage()]
    assert [r.levelname for r in lost] == ["WARNING"]
    assert "guest:***@" in lost[0].getMessage()
    assert [r.levelname for r in back] == ["INFO"]

    # Until every action has a record: replays of redelivered plans come too, so a count of
    # 2 x 60 records can be reached before the last plan's own records land.
    wanted = {f"{plan_id}-{i}" for plan_id in plans for i in range(2)}
    records: list[EnactmentRecord] = []
    async with asyncio.timeout(30):
        while {r.action.action_id for r in records} != wanted:
            records += await broker.records(results.name, expect=1, timeout=30)
    seen = defaultdict(set)
    for record in records:
        seen[record.plan_id].add(record.action.action_id)
    assert set(seen) == set(plans), "a plan was lost"
    assert all(len(ids) == 2 for ids in seen.values())
    await running.shutdown()
    assert await broker.depth(broker.names.plans_queue) == 0


async def test_sigterm_while_plans_are_queued_exits_zero_and_loses_no_plan(
    broker: Broker, amqp_url: str
) -> None:
    await broker.declare_topology()
    results = await broker.results_queue()
    plans = [f"plan-{i}" for i in range(300)]
    for plan_id in plans:
        await broker.publish_plan(no_op_plan(plan_id, actions=20))
    env = {
        **os.environ,
        "OPTIMISER_AMQP_URL": amqp_url,
        "OPTIMISER_NAMESPACE": broker.names.namespace,
        "OPTIMISER_METRICS_PORT": "-1",
        "OPTIMISER_PREFETCH": "20",
        "OPTIMISER_MAX_ENACTMENTS_PER_CYCLE": "20",
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", "run", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    first = await broker.drain(results.name, expect=20 * 5, timeout=30)
    worker.send_signal(signal.SIGTERM)
    async with asyncio.timeout(60):
        output, _ = await worker.communicate()
    assert worker.returncode == 0, output.decode()
    assert b"SIGTERM received" in output

    rest = await broker.drain(results.name, expect=20 * len(plans), timeout=3)
    recorded: dict[str, int] = defaultdict(int)
    for message in first + rest:
        recorded[str(message.headers["plan_id"])] += 1
    left = await broker.drain(broker.names.plans_queue, expect=len(plans), timeout=3)
    queued = {json.loads(msg.body)["plan_id"] for msg in left}
    # Every plan is either fully recorded (and gone) or untouched (and still queued).
    assert set(recorded) | queued == set(plans)
    assert not set(recorded) & queued
    assert all(count == 20 for count in recorded.values())
    assert queued, "SIGTERM came too late to test anything: every plan was done"


async def test_a_dry_run_worker_records_skipped_and_sends_nothing_for_review(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    running = await start_worker(optimiser=OptimiserConfig(dry_run=True))
    results = await broker.results_queue()
    plan = no_op_plan("dry")
    plan["actions"][0]["action_kind"] = "FLAG_FOR_REVIEW"  # type: ignore[index]
    await broker.publish_plan(plan)
    records = await broker.records(results.name, expect=2)
    assert {r.status.value for r in records} == {"SKIPPED"}
    assert await broker.depth(broker.names.review_queue) == 0
    await running.shutdown()


async def test_a_deleted_plans_queue_is_declared_again_and_consumed(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    # RabbitMQ cancels the consumer of a deleted queue; aio-pika before 10 never recovered
    # from that (aio-pika #334). The worker must come back to consuming on its own.
    results = await broker.results_queue()
    running = await start_worker()
    await asyncio.to_thread(rabbitmqctl, "delete_queue", broker.names.plans_queue)

    async with asyncio.timeout(30):
        while True:
            try:
                queue = await broker.connection.channel()
                declared = await queue.declare_queue(broker.names.plans_queue, passive=True)
                consumers = declared.declaration_result.consumer_count
                await queue.close()
                if consumers:
                    break
            except Exception:  # not declared again yet: the passive declare closes the channel
                pass
            await asyncio.sleep(0.2)

    await broker.publish_plan(no_op_plan("after-delete"))
    records = await broker.records(results.name, expect=2)
    assert {r.plan_id for r in records} == {"after-delete"}
    assert running.worker.readiness()[0]


async def test_a_silent_publish_connection_holds_the_plan_until_its_records_go_out(
    broker: Broker, start_worker: WorkerStarter, amqp_url: str
) -> None:
    # The broker stops hearing the publish connection: aiormq notices the missed heartbeats,
    # drops the channel, and fails the pending confirms with CancelledError. The plan must
    # be held (not stranded, not re-enacted) until the reconnected channel confirms.
    proxy, via_proxy = await SilencingProxy.in_front_of(amqp_url)
    try:
        results = await broker.results_queue()
        running = await start_worker(amqp_url=via_proxy, heartbeat_s=1, publish_timeout_s=30.0)
        assert proxy.accepted == 2  # consume, then publish (commands share the latter)
        proxy.silence(1)  # the publish connection

        await broker.publish_plan(no_op_plan("silenced"))
        records = await broker.records(results.name, expect=2, timeout=60)

        assert {r.plan_id for r in records} == {"silenced"}
        await wait_for(
            lambda: running.metric("asi_optimiser_plans_consumed_total", outcome="acked") == 1,
            what="the plan acked after the reconnect",
        )
        assert running.metric("asi_optimiser_enact_calls_total") == 1
        assert proxy.accepted >= 3  # the publish connection was made again
        await running.shutdown()
    finally:
        await proxy.close()


class _SlowLoad:
    """A load shedder that holds its first call until told, so an outage can start mid-plan."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.release = asyncio.Event()
        self.applied: dict[str, int] = defaultdict(int)

    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        self.called.set()
        await self.release.wait()
        self.applied[command.action_id] += 1
        return SubsystemResult(True, "shed")


async def test_an_action_in_hand_waits_out_a_long_outage_and_the_rest_waits_for_the_redelivery(
    broker: Broker, start_worker: WorkerStarter, amqp_url: str
) -> None:
    # The broker vanishes mid-plan for longer than three publish timeouts: the review item in
    # hand waits for it (outage_wait_s) instead of being recorded FAILED; the action after it
    # is not enacted by a worker whose delivery is gone, but once the plan is redelivered.
    proxy, via_proxy = await SilencingProxy.in_front_of(amqp_url)
    load = _SlowLoad()
    try:
        results = await broker.results_queue()
        running = await start_worker(
            amqp_url=via_proxy,
            subsystems=Subsystems(load=load),
            heartbeat_s=1,
            publish_timeout_s=1.0,
            outage_wait_s=60.0,
        )
        plan = {
            "plan_id": "outage",
            "actions": [
                {"action_id": "o-0", "module_name": "m0", "action_kind": "REDUCE_LOAD"},
                {"action_id": "o-1", "module_name": "m1", "action_kind": "FLAG_FOR_REVIEW"},
                {"action_id": "o-2", "module_name": "m2", "action_kind": "REDUCE_LOAD"},
            ],
        }
        await broker.publish_plan(plan)
        async with asyncio.timeout(20):
            await load.called.wait()
        proxy.blackout()
        load.release.set()
        await asyncio.sleep(8.0)  # > 3 attempts of 1 s: the old give-up point
        proxy.restore()

        records = await broker.records(results.name, expect=5, timeout=60)
        by_id: dict[str, list[EnactmentRecord]] = defaultdict(list)
        for record in records:
            by_id[record.action.action_id].append(record)
        firsts = {i: next(r for r in rs if not r.replay) for i, rs in by_id.items()}
        assert {i: r.status.value for i, r in firsts.items()} == {
            "o-0": "SUCCESS", "o-1": "SUCCESS", "o-2": "SUCCESS",
        }  # fmt: skip
        assert dict(load.applied) == {"o-0": 1, "o-2": 1}
        items = await broker.drain(broker.names.review_queue, expect=10, timeout=3)
        assert {m.message_id for m in items} == {"o-1"}
        await running.shutdown()
    finally:
        await proxy.close()


@pytest.mark.parametrize("outage", ["cut", "blackout"])
async def test_after_outages_the_worker_consumes_polls_and_stops_cleanly(
    broker: Broker, start_worker: WorkerStarter, amqp_url: str, outage: str
) -> None:
    # The queue poller opens a channel every 50 ms; each outage closes the connections under
    # it (at once, or by heartbeat when the broker goes silent), now and then while it opens
    # one. CI saw a CancelledError of aiormq's end the poller and then the worker's shutdown.
    proxy, via_proxy = await SilencingProxy.in_front_of(amqp_url)
    try:
        results = await broker.results_queue()
        running = await start_worker(amqp_url=via_proxy, heartbeat_s=1, queue_poll_s=0.05)

        def polled() -> bool:
            return running.metric("asi_optimiser_queue_consumers", queue="plans") == 1.0

        for number in range(5):
            await wait_for(polled, timeout=30, what=f"the queue gauges before outage {number}")
            await asyncio.sleep(0.013 * number)  # somewhere else in the poll each time
            if outage == "cut":
                proxy.cut()
                await asyncio.sleep(0.3)
            else:
                proxy.blackout()
                await asyncio.sleep(4.0)  # > the heartbeat's timeout
            proxy.restore()
            if number == 2:
                await broker.publish_plan(no_op_plan("between"))
                records = await broker.records(results.name, expect=2, timeout=30)
                assert sorted(r.action.action_id for r in records) == ["between-0", "between-1"]
        await wait_for(polled, timeout=30, what="the queue gauges after the last outage")
        # Told to stop while its connections die (a silent broker: not yet declared dead).
        if outage == "cut":
            proxy.cut()
        else:
            proxy.blackout()
            await asyncio.sleep(4.0)
        await running.shutdown()
    finally:
        await proxy.close()


async def test_a_worker_cut_off_for_long_is_ready_within_seconds_of_the_broker_answering(
    broker: Broker, start_worker: WorkerStarter, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The reconnect backoff doubles from 0.5 s; with a ceiling of 30 s (and jitter up to
    # 1.5x) a worker cut off for minutes could sleep through up to 45 s of a broker that is
    # back: the alerts run saw it ready 32 s after a 7-minute cut-off. 40 s of cut-off takes
    # the backoff past any ceiling a worker that wants to be back in seconds can have.
    caplog.set_level(logging.WARNING, logger="worker.amqp.connection")
    proxy, via_proxy = await SilencingProxy.in_front_of(amqp_url)
    try:
        running = await start_worker(amqp_url=via_proxy, heartbeat_s=1)
        connections = proxy.accepted
        proxy.cut()
        await wait_for(lambda: not running.worker.readiness()[0], what="the worker to be unready")
        await asyncio.sleep(40.0)
        loop = asyncio.get_running_loop()
        restored = loop.time()
        proxy.restore()
        await wait_for(lambda: running.worker.readiness()[0], timeout=60, what="the worker ready")
        took = loop.time() - restored
        assert took <= RECONNECT_WITHIN_S, f"ready {took:.1f}s after the broker answered again"
        # Trying every few seconds for 40 s, and saying so once for each connection.
        said = [r.getMessage() for r in caplog.records if r.name == "worker.amqp.connection"]
        assert len(said) == connections, said
        assert not any("StopAsyncIteration" in line for line in said), said  # words, not a type
        await running.shutdown()
    finally:
        await proxy.close()


async def test_a_worker_that_loses_the_broker_says_so_once_and_once_when_it_is_back(
    broker: Broker, amqp_url: str
) -> None:
    await broker.declare_topology()
    worker = await WorkerProcess(amqp_url, broker.names.namespace).start()
    await worker.wait_consuming()
    before = len(worker.lines)
    pids = await asyncio.to_thread(worker_connection_pids, broker.names.namespace)
    for pid in pids:
        await asyncio.to_thread(rabbitmqctl, "close_connection", pid, "fault test")
    async with asyncio.timeout(30):
        while not any("is back: consuming plans again" in line for line in worker.lines):
            await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)  # whatever else it has to say about it
    assert await worker.stop() == 0

    said = worker.lines[before:]
    lost = [line for line in said if "WARNING worker.amqp.worker: lost the broker at" in line]
    back = [line for line in said if "INFO    worker.amqp.worker: the broker at" in line]
    library = [line for line in said if " aio_pika." in line or " aiormq." in line]
    assert len(lost) == 1, said
    assert len(back) == 1, said
    assert not any("Traceback" in line for line in said), said
    # Two connections dropped: at most a line or two from the libraries for each.
    assert len(library) <= 4, said
