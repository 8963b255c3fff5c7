"""Effectively-once on a real three-node cluster with node faults (slow: part of ``.ci/run``).

Three nodes of the tests' own (``tests/support/rabbit_nodes.py``; the broker on 5672 is never
touched), with a 10 s net tick. Node A declares the namespace, so it leads the plans queue and
the state stream; the active worker prefers node B, its standby node C; the subsystem server
and the test's own clients use node C, which no test faults. Plans of REDUCE_LOAD and
FLAG_FOR_REVIEW actions are counted where they land: at the served subsystem, on the review
queue, on the results exchange and in the state stream itself. Whatever the fault: nothing
lost, nothing enacted twice, no record missing from the state log, and one record per action
that is not a replay (a copy re-sent after a lost confirm is the same record, with the same
message id).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aio_pika
import pytest

from schemas import EnactmentRecord, decode_record
from schemas.logs import records_of
from schemas.names import Names
from tests.support.broker import read_stream
from tests.support.processes import WorkerProcess
from tests.support.rabbit_nodes import Cluster, RabbitNode, require_rabbitmq_server
from tests.support.subsystems import CountingLoad
from worker import Subsystems
from worker.amqp.connection import connect
from worker.amqp.topology import declare
from worker.settings import WorkerSettings
from worker.subsystems.server import SubsystemServer

PLANS = 120
#: Per plan: two changes counted at the subsystem, two review items counted on their queue.
KINDS = ("REDUCE_LOAD", "FLAG_FOR_REVIEW", "REDUCE_LOAD", "FLAG_FOR_REVIEW")
#: The workers notice a silent node in about three heartbeats: below a third of the net tick.
WORKER = {"heartbeat_s": "3", "change_budget": "1000000", "prefetch": "8"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_rabbitmq_server()
    running = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        took = running.start()
        print(f"three-node cluster up in {took:.1f}s")
        yield running
    finally:
        running.stop()


@dataclass
class Run:
    cluster: Cluster
    names: Names
    load: CountingLoad
    records: list[EnactmentRecord]
    connection: aio_pika.abc.AbstractRobustConnection

    @property
    def a(self) -> RabbitNode:
        return self.cluster.nodes[0]

    @property
    def b(self) -> RabbitNode:
        return self.cluster.nodes[1]

    def worker(self, first: int) -> WorkerProcess:
        urls = self.cluster.urls(first=first)
        return WorkerProcess(urls, self.names.namespace, **WORKER)

    async def publish(self, prefix: str) -> set[str]:
        channel = await self.connection.channel()
        exchange = await channel.get_exchange(self.names.plans_exchange)
        expected = set()
        for p in range(PLANS):
            plan_id = f"{prefix}{p:03d}"
            actions = [
                {"action_id": f"{plan_id}-{i}", "module_name": f"{plan_id}.m{i}",
                 "action_kind": kind}
                for i, kind in enumerate(KINDS)
            ]  # fmt: skip
            expected |= {a["action_id"] for a in actions}
            body = aio_pika.Message(
                json.dumps({"plan_id": plan_id, "actions": actions}).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await exchange.publish(body, routing_key="")
        await channel.close()
        return expected

    async def until_recorded(self, expected: set[str], timeout: float = 180.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not expected <= {r.action.action_id for r in self.records}:
                    await asyncio.sleep(0.2)
        except TimeoutError:
            missing = expected - {r.action.action_id for r in self.records}
            logs = "\n".join(
                f"--- worker {n}\n" + "\n".join(w.lines[-25:])
                for n, w in enumerate(WorkerProcess.started)
            )
            pytest.fail(f"{len(missing)} actions without a record after {timeout:g}s\n{logs}")

    async def state_log(self) -> list[EnactmentRecord]:
        """Every record in the state stream, read from its first message to its last."""
        messages = await read_stream(self.connection, self.names.results_log, quiet_s=3.0)
        return [record for kind, body in messages for record in records_of(kind, body)]

    async def review_ids(self) -> Counter[tuple[str, str]]:
        """Review items by (action id, when flagged): a copy re-sent after a lost confirm has
        the same pair, a second enactment the same id and another time."""
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=1000)
        ids: Counter[tuple[str, str]] = Counter()
        last_seen = asyncio.get_running_loop().time()

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal last_seen
            last_seen = asyncio.get_running_loop().time()
            ids[message.message_id or "", str((message.headers or {}).get("flagged_at"))] += 1
            await message.ack()

        queue = await channel.get_queue(self.names.review_queue, ensure=False)
        await queue.consume(take)
        while asyncio.get_running_loop().time() - last_seen < 3.0:
            await asyncio.sleep(0.2)
        await channel.close()
        return ids

    async def verify(self, expected: set[str], what: str) -> None:
        """The invariants of the module docstring, with a report of what was counted."""
        await self.until_recorded(expected)
        first = Counter(r.action.action_id for r in self.records if not r.replay)
        # A record published again after its confirm was lost is the same record: same
        # message id (the action id) and the same body. A *different* one would be a second
        # enactment, or two workers' contradicting facts.
        originals: dict[str, EnactmentRecord] = {}
        contradicting = []
        for record in self.records:
            if record.replay:
                continue
            seen = originals.setdefault(record.action.action_id, record)
            if seen != record:
                contradicting.append((seen, record))
        logged = Counter(r.action.action_id for r in await self.state_log() if not r.replay)
        flagged = await self.review_ids()
        reviews = Counter(action_id for action_id, _ in flagged)
        loads = {a for a in expected if int(a.rsplit("-", 1)[1]) % 2 == 0}
        flags = expected - loads
        print(
            f"{what}: {len(first)} actions recorded, {sum(first.values()) - len(first)} copies "
            f"re-sent after a lost confirm, {len(contradicting)} contradicting; applied "
            f"{len(self.load.applied)} (max {max(self.load.applied.values(), default=0)}x); "
            f"review items {len(reviews)} distinct, {sum(flagged.values()) - len(flagged)} "
            f"copies re-sent, {sum(reviews.values()) - len(reviews)} flagged twice; "
            f"state log {len(logged)} of {len(expected)}"
        )
        assert set(first) == expected, "an action has no record"
        assert contradicting == [], "two different records that are not replays: " + "; ".join(
            f"{a.action.action_id}: {a.status} {a.detail!r} at {a.attempted_at} / "
            f"{b.status} {b.detail!r} at {b.attempted_at}"
            for a, b in contradicting
        )
        assert set(self.load.applied) == loads, "a change was lost"
        assert set(self.load.applied.values()) == {1}, "a change was enacted twice"
        assert set(reviews) == flags, "a review item was lost (or one came from nowhere)"
        twice = sorted(a for a, n in reviews.items() if n > 1)
        assert twice == [], f"flagged for review twice: {twice}\n{_story(twice)}"
        assert expected <= set(logged), f"{len(expected - set(logged))} missing from the log"


def _story(action_ids: list[str]) -> str:
    """What each worker logged about these actions' plans, and its warnings: a failure's
    evidence (the defect this suite finds shows in one run of several)."""
    plans = {a.rsplit("-", 1)[0] for a in action_ids}
    told = []
    for n, worker in enumerate(WorkerProcess.started):
        told.append(f"--- worker {n}")
        told += [
            line
            for line in worker.lines
            if any(p in line for p in plans) or "WARNING" in line or "ERROR" in line
        ][-60:]
    return "\n".join(told)


@pytest.fixture
async def run(cluster: Cluster) -> AsyncIterator[Run]:
    for node in cluster.nodes:  # a test before may have left one stopped or frozen
        heal(node)
    names = Names(f"c{uuid.uuid4().hex[:10]}")
    seed = await aio_pika.connect(cluster.nodes[0].url())
    await declare(await seed.channel(), names)  # node A leads the queues and the stream
    await seed.close()
    client = WorkerSettings(amqp_url=cluster.urls(first=2), connect_timeout_s=5.0)
    connection = await connect(client, "cluster-test")
    channel = await connection.channel()
    records: list[EnactmentRecord] = []
    results = await channel.declare_queue(
        f"{names.namespace}.test-results", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await results.bind(names.results_exchange, "#")

    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        records.append(decode_record(message.body))
        await message.ack()

    await results.consume(take)
    load = CountingLoad()
    server = SubsystemServer(cluster.nodes[2].url(), names.namespace)
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(server.serve(Subsystems(load=load), stop=stop, ready=ready))
    async with asyncio.timeout(30):
        await ready.wait()
    try:
        yield Run(cluster, names, load, records, connection)
    finally:
        while WorkerProcess.started:
            process = WorkerProcess.started.pop()
            if process.returncode is None:
                process.kill()
                await process.wait(timeout=10)
        stop.set()
        await serving
        for node in cluster.nodes:
            heal(node)
        await connection.close()


def heal(node: RabbitNode) -> None:
    """Back to a running member of the cluster, whatever a test did to it."""
    assert node.process is not None
    if node.process.poll() is not None:  # killed: start it again, it rejoins by itself
        node.process = None
        node.start()
        return
    os.killpg(node.process.pid, signal.SIGCONT)
    node.ctl("start_app", timeout=120)
    node.ctl("await_startup", timeout=120)


async def _active_and_standby(run: Run) -> tuple[WorkerProcess, WorkerProcess]:
    active = await run.worker(first=1).start()  # prefers node B
    await active.wait_consuming(timeout=60)
    standby = await run.worker(first=2).start()  # prefers node C
    await standby.wait_consuming(timeout=60)
    return active, standby


async def _after(run: Run, count: int) -> None:
    async with asyncio.timeout(120):
        while len(run.load.applied) < count:
            await asyncio.sleep(0.05)


async def test_the_node_leading_the_queues_and_the_stream_stops(run: Run) -> None:
    await _active_and_standby(run)
    expected = await run.publish("L")
    await _after(run, 40)
    await asyncio.to_thread(run.a.ctl, "stop_app")
    await asyncio.sleep(5.0)
    await asyncio.to_thread(run.a.ctl, "start_app")
    await run.verify(expected, "leader's node stopped")


async def test_the_active_workers_node_stops_and_starts_again(run: Run) -> None:
    await _active_and_standby(run)
    expected = await run.publish("S")
    await _after(run, 40)
    await asyncio.to_thread(run.b.ctl, "stop_app")
    await asyncio.sleep(15.0)
    await asyncio.to_thread(run.b.ctl, "start_app")
    await run.verify(expected, "active worker's node stopped, started 15 s later")


async def test_the_active_workers_node_is_killed(run: Run) -> None:
    await _active_and_standby(run)
    expected = await run.publish("K")
    await _after(run, 40)
    assert run.b.process is not None
    os.killpg(run.b.process.pid, signal.SIGKILL)
    await run.verify(expected, "active worker's node SIGKILLed")


async def test_the_active_workers_node_freezes_past_the_net_tick(run: Run) -> None:
    await _active_and_standby(run)
    expected = await run.publish("F")
    await _after(run, 40)
    assert run.b.process is not None
    frozen_at = time.monotonic()
    os.killpg(run.b.process.pid, signal.SIGSTOP)
    await asyncio.sleep(30.0)  # three net ticks: the others declare it down
    os.killpg(run.b.process.pid, signal.SIGCONT)
    print(f"node B frozen for {time.monotonic() - frozen_at:.0f}s")
    await run.verify(expected, "active worker's node frozen 30 s")
