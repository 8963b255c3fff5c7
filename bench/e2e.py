"""End to end, side by side: ``self-optimiser run`` against two relays users would write instead.

Candidates, each started as a process of its own (see ``bench/relays/``):

- ``aio-pika relay``: the floor. Decode the plan, publish one persistent, confirmed, mandatory
  message per action, ack after the confirms;
- ``FastStream relay``: the same, written as FastStream's documentation shows;
- ``self-optimiser run``: the worker, as users start it (INFO logging, metrics on), with every
  guarantee: the optimiser's gates, records to ``N.results`` and the state stream, which it reads
  back, dedup by action id, acks after confirms.

One driver serves them all alike: it declares a fresh namespace per run (the worker's own
``layout()``, with the plans queue classic or quorum), publishes the plans, and counts the
records on a queue bound to ``N.results``. Plans hold NO_OP actions, so the worker makes no
subsystem round trip: every candidate does one confirmed publish per action.

Throughput: a backlog is published first, then the candidate started; the rate is taken from
the first record to the last (start-up is not counted). Latency: plans published at a steady
rate to a running candidate, from each plan's publish to its last record; in rounds, the
candidates alternating, and each candidate's samples of all rounds pooled (a p99 of one short
run is its second-slowest plan or so, and moves with whatever else the machine did then).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from schemas import ActionKind, EnactmentRecord, EnactmentStatus, ImprovementAction, Plan, encode
from schemas.logs import RECORDS_TYPE
from schemas.names import Names
from worker.amqp.state import records_messages
from worker.amqp.topology import layout, queue_states

RELAY: Final = "aio-pika relay"
FASTSTREAM: Final = "FastStream relay"
WORKER: Final = "self-optimiser run"
CANDIDATES: Final = (RELAY, FASTSTREAM, WORKER)
ROOT: Final = Path(__file__).parent.parent
#: The longest any one run may take before the bench gives up on a candidate.
RUN_TIMEOUT_S: Final = 300.0
#: A start-up with a million records took 181 s before the records were kept compact.
STARTUP_TIMEOUT_S: Final = 900.0


class BenchError(Exception):
    """A candidate died or did not finish; the message says which and shows its stderr."""


@dataclass(frozen=True)
class Scenario:
    actions_per_plan: int = 10
    prefetch: int = 32
    queue_type: str = "quorum"
    total_actions: int = 20_000

    @property
    def plans(self) -> int:
        return max(1, self.total_actions // self.actions_per_plan)

    def label(self) -> str:
        return (
            f"{self.actions_per_plan} actions/plan, prefetch {self.prefetch}, "
            f"{self.queue_type} plans queue"
        )


@dataclass
class Run:
    """One candidate, one scenario, one round."""

    candidate: str
    scenario: Scenario
    actions_per_s: float
    seconds: float
    peak_rss_mb: float
    cpu_us_per_action: float

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scenario": asdict(self.scenario)}


# --- the candidates, as processes --------------------------------------------------------------


def command(
    candidate: str, url: str, namespace: str, prefetch: int, builds: Mapping[str, str] = {}
) -> list[str]:
    """How to start ``candidate``; ``builds`` names other builds of the worker, each by the
    ``self-optimiser`` executable to run (``bench.versus``)."""
    if candidate in builds:
        return [builds[candidate], "run"]
    if candidate == RELAY:
        return [sys.executable, "-m", "bench.relays.aiopika_relay", url, namespace, str(prefetch)]
    if candidate == FASTSTREAM:
        return [
            sys.executable, "-m", "bench.relays.faststream_relay", url, namespace, str(prefetch)
        ]  # fmt: skip
    script = shutil.which("self-optimiser", path=str(Path(sys.executable).parent))
    return [script, "run"] if script else [sys.executable, "-m", "worker.cli", "run"]


def worker_env(url: str, namespace: str, prefetch: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "OPTIMISER_AMQP_URL": url,
        "OPTIMISER_NAMESPACE": namespace,
        "OPTIMISER_PREFETCH": str(prefetch),
        "OPTIMISER_METRICS_PORT": "0",  # metrics served, on a free port
        "OPTIMISER_DECLARE_TOPOLOGY": "false",  # the driver declares (classic or quorum)
        "OPTIMISER_MAX_ENACTMENTS_PER_CYCLE": "1000",  # every action through the optimiser
        **extra,
    }


class Candidate:
    """A candidate's process; its stderr goes to a file, shown if it dies."""

    def __init__(
        self,
        name: str,
        url: str,
        namespace: str,
        prefetch: int,
        builds: Mapping[str, str] = {},
        **env: str,
    ) -> None:
        self.name = name
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command(name, url, namespace, prefetch, builds),
            cwd=ROOT,
            env=worker_env(url, namespace, prefetch, **env),
            stdout=self._log,
            stderr=self._log,
        )
        self.peak_rss_mb = 0.0

    def rss_mb(self) -> float:
        """Resident memory now (from /proc), and the peak seen so far."""
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) / 1024
                        self.peak_rss_mb = max(self.peak_rss_mb, rss)
                        return rss
        except OSError:
            pass
        return 0.0

    def cpu_s(self) -> float:
        """CPU time the process has used so far (user + system), from /proc."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.process.returncode}: {self.output()}")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def said(self, text: str) -> bool:
        """Whether ``text`` is anywhere in what the process wrote so far."""
        self._log.seek(0)
        return text.encode() in self._log.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# --- the driver: a namespace of its own per run -------------------------------------------------


class Namespace:
    """Declares a fresh namespace (and a counter queue on ``N.results``); deletes it after."""

    def __init__(self, url: str, queue_type: str = "quorum", *, count_records: bool = True):
        self.url = url
        self.names = Names(f"bench-{uuid.uuid4().hex[:10]}")
        self.queue_type = queue_type
        self.count_records = count_records
        self.counter = f"{self.names.namespace}.bench-counter"
        self.connection: AbstractRobustConnection | None = None

    async def __aenter__(self) -> Namespace:
        self.connection = await aio_pika.connect_robust(self.url)
        channel = await self.connection.channel()
        spec = layout(self.names)
        for exchange in spec.exchanges:
            await channel.declare_exchange(exchange.name, exchange.type, durable=True)
        for queue in spec.queues:
            arguments = dict(queue.arguments)
            if queue.name == self.names.plans_queue and self.queue_type == "classic":
                arguments = {"x-single-active-consumer": True}
            await channel.declare_queue(queue.name, durable=True, arguments=arguments)
        for binding in spec.bindings:
            queue_ = await channel.get_queue(binding.queue, ensure=False)
            await queue_.bind(binding.exchange, binding.routing_key)
        if self.count_records:
            counter = await channel.declare_queue(self.counter, exclusive=True)
            await counter.bind(self.names.results_exchange, "#")
        await channel.close()
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.connection is not None
        channel = await self.connection.channel()
        for queue in (*self.names.queues, self.counter):
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await channel.queue_delete(queue)
        for exchange in self.names.exchanges:
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await channel.exchange_delete(exchange)
        await self.connection.close()

    async def publish(
        self,
        exchange: str,
        bodies: list[bytes],
        *,
        batch: int = 1000,
        message_ids: list[str] | None = None,
        message_type: str | None = None,
    ) -> None:
        """Publish persistent messages with confirms, ``batch`` in flight at a time."""
        ids: list[str | None] = list(message_ids) if message_ids else [None] * len(bodies)
        assert self.connection is not None
        channel = await self.connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        for start in range(0, len(bodies), batch):
            await asyncio.gather(
                *(
                    target.publish(
                        aio_pika.Message(
                            body,
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=message_id,
                            type=message_type,
                        ),
                        routing_key="bench",
                    )
                    for body, message_id in zip(
                        bodies[start : start + batch], ids[start : start + batch], strict=True
                    )
                )
            )
        await channel.close()

    async def state(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers) of a queue of the namespace."""
        assert self.connection is not None
        found = (await queue_states(self.connection, {queue: queue}))[queue]
        if found is None:
            raise BenchError(f"queue {queue!r} is gone")
        return found.messages, found.consumers

    async def until_consumed(self, candidate: Candidate, timeout_s: float = 60.0) -> None:
        """Until the candidate consumes the plans queue (the worker: its state is read)."""
        deadline = time.perf_counter() + timeout_s
        while (await self.state(self.names.plans_queue))[1] < 1:
            candidate.check_alive()
            candidate.rss_mb()  # keeps its peak
            if time.perf_counter() > deadline:
                raise BenchError(f"{candidate.name} did not consume within {timeout_s:g}s")
            await asyncio.sleep(0.02)


def plan_bodies(count: int, actions: int, *, prefix: str) -> list[bytes]:
    """NO_OP plans, ten module names, a rationale each: what a planner sends, minus changes."""
    return [
        encode(
            Plan(
                plan_id=f"{prefix}-{p}",
                planner="bench",
                actions=[
                    ImprovementAction(
                        action_id=f"{prefix}-{p}-{i}",
                        module_name=f"cognition.module_{i % 10}",
                        action_kind=ActionKind.NO_OP,
                        priority=i,
                        rationale="p95 latency regressed by 12% since the last deploy",
                    )
                    for i in range(actions)
                ],
            )
        )
        for p in range(count)
    ]


# --- scenarios -----------------------------------------------------------------------------------


async def throughput(
    candidate: str, url: str, scenario: Scenario, *, builds: Mapping[str, str] = {}
) -> Run:
    """Publish the backlog, start the candidate, count records from the first to the last."""
    async with Namespace(url, scenario.queue_type) as space:
        total = scenario.plans * scenario.actions_per_plan
        bodies = plan_bodies(
            scenario.plans, scenario.actions_per_plan, prefix=space.names.namespace
        )
        await space.publish(space.names.plans_exchange, bodies)
        running = Candidate(candidate, url, space.names.namespace, scenario.prefetch, builds)
        try:
            first: tuple[float, int, float] | None = None
            deadline = time.perf_counter() + RUN_TIMEOUT_S
            while True:
                counted, _ = await space.state(space.counter)
                now = time.perf_counter()
                running.rss_mb()
                if counted and first is None:
                    first = (now, counted, running.cpu_s())
                if counted >= total:
                    cpu_s = running.cpu_s() - first[2] if first else 0.0
                    break
                running.check_alive()
                if now > deadline:
                    raise BenchError(f"{candidate}: {counted} of {total} records in time")
                await asyncio.sleep(0.02)
        finally:
            running.stop()
    assert first is not None
    seconds = max(now - first[0], 1e-3)
    done = total - first[1]
    return Run(
        candidate, scenario, done / seconds, seconds, running.peak_rss_mb, cpu_s / done * 1e6
    )


@dataclass
class Latency:
    candidate: str
    plans_per_s: float
    p50_ms: float
    p99_ms: float
    samples: int
    rounds: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Waits:
    """One latency run: the rate achieved, and each plan's wait in milliseconds."""

    candidate: str
    plans_per_s: float
    waits_ms: list[float]


def pooled(runs: list[Waits]) -> Latency:
    """The runs of one candidate at one load as one sample."""
    waits = sorted(w for run in runs for w in run.waits_ms)
    return Latency(
        runs[0].candidate,
        statistics.mean(run.plans_per_s for run in runs),
        statistics.median(waits),
        _percentile(waits, 0.99),
        len(waits),
        len(runs),
    )


async def latency(
    candidate: str, url: str, *, plans_per_s: float, seconds: float, actions: int = 10
) -> Waits:
    """Plans at a steady rate to a running candidate; publish → last record, per plan."""
    async with Namespace(url, "quorum", count_records=False) as space:
        assert space.connection is not None
        arrived: Counter[str] = Counter()
        done: dict[str, float] = {}

        async def take(message: AbstractIncomingMessage) -> None:
            plan_id = str((message.headers or {}).get("plan_id", ""))
            arrived[plan_id] += 1
            if arrived[plan_id] == actions:
                done[plan_id] = time.perf_counter()

        channel = await space.connection.channel()
        await channel.set_qos(prefetch_count=1000)
        counter = await channel.declare_queue(space.counter, exclusive=True)
        await counter.bind(space.names.results_exchange, "#")
        await counter.consume(take, no_ack=True)

        running = Candidate(candidate, url, space.names.namespace, 32)
        try:
            await space.until_consumed(running)
            count = max(1, int(plans_per_s * seconds))
            bodies = plan_bodies(count, actions, prefix=space.names.namespace)
            publishing = await space.connection.channel(publisher_confirms=True)
            plans = await publishing.get_exchange(space.names.plans_exchange)
            sent: dict[str, float] = {}
            pending = set()
            start = time.perf_counter()
            for index, body in enumerate(bodies):
                delay = start + index / plans_per_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                plan_id = f"{space.names.namespace}-{index}"
                sent[plan_id] = time.perf_counter()
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                task = asyncio.ensure_future(plans.publish(message, routing_key="bench"))
                pending.add(task)
                task.add_done_callback(pending.discard)
            achieved = count / max(time.perf_counter() - start, 1e-3)
            deadline = time.perf_counter() + RUN_TIMEOUT_S
            while len(done) < count:
                running.check_alive()
                if time.perf_counter() > deadline:
                    raise BenchError(f"{candidate}: {len(done)} of {count} plans in time")
                await asyncio.sleep(0.05)
        finally:
            running.stop()
            await channel.close()  # before the namespace goes, or the broker cancels it
    return Waits(candidate, achieved, [(done[p] - sent[p]) * 1000 for p in sent])


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class Memory:
    backlog_plans: int
    processed_actions: int
    peak_rss_mb: float
    samples_mb: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def memory(url: str, *, backlog: int, processed: int = 5_000, actions: int = 10) -> Memory:
    """The worker's resident memory with ``backlog`` plans queued, while it enacts the first
    ``processed`` actions: the same work whatever the backlog, so that only the backlog differs
    (the action ids it remembers for ``dedup_window_s`` grow with the work done, not the queue)."""
    async with Namespace(url, "quorum") as space:
        bodies = plan_bodies(backlog, actions, prefix=space.names.namespace)
        await space.publish(space.names.plans_exchange, bodies, batch=2000)
        del bodies
        running = Candidate(WORKER, url, space.names.namespace, 32)
        samples = []
        try:
            deadline = time.perf_counter() + RUN_TIMEOUT_S
            while (await space.state(space.counter))[0] < processed:
                running.check_alive()
                if time.perf_counter() > deadline:
                    raise BenchError(f"the worker did not enact {processed} actions in time")
                samples.append(round(running.rss_mb(), 1))
                await asyncio.sleep(0.1)
        finally:
            running.stop()
    return Memory(backlog, processed, running.peak_rss_mb, samples)


@dataclass
class StartUp:
    records: int
    seconds: float  # reading the window whole (no checkpoints yet)
    peak_rss_mb: float
    checkpoint_seconds: float  # again, from the checkpoints the first one wrote
    checkpoint_peak_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Records are written to the state stream in slices of this many, so that the bench itself
#: never holds a million of them.
STARTUP_SLICE: Final = 50_000
#: Records a message of the state log holds, as the worker writes them: a group of plans
#: published together (at ten actions a plan, one plan a group is the least).
STARTUP_GROUP: Final = 10


async def startup(url: str, *, records: int) -> StartUp:
    """From ``self-optimiser run`` to consuming, with ``records`` in the state stream to read
    (a day's worth, ``dedup_window_s`` one day so that all of it is read), and the worker's
    peak resident memory on the way. The records are written as the worker writes them, ten
    to a message (a group of plans published together). Twice: the first worker reads them
    all (no checkpoint yet), enacts one plan and so writes its checkpoints; a second one
    starts from those."""
    async with Namespace(url, "quorum", count_records=False) as space:
        now = datetime.now(UTC)
        step = timedelta(days=1) / max(records, 1)
        for first in range(0, records, STARTUP_SLICE):
            numbers = range(first, min(records, first + STARTUP_SLICE))
            bodies = [encode(_day_record(n, now - timedelta(days=1) + step * n)) for n in numbers]
            groups = [bodies[i : i + STARTUP_GROUP] for i in range(0, len(bodies), STARTUP_GROUP)]
            await space.publish(
                space.names.notes,
                [records_messages(space.names.notes, group)[0].body for group in groups],
                batch=500,
                message_type=RECORDS_TYPE,
            )
        started = time.perf_counter()
        # Its checkpoints written at once, not after the default five minutes: what is
        # measured is the start-up from them (the second worker runs as users run it).
        running = Candidate(
            WORKER, url, space.names.namespace, 32, OPTIMISER_DEDUP_WINDOW_S="86400",
            OPTIMISER_CHECKPOINT_INTERVAL_S="1",
        )  # fmt: skip
        try:
            await space.until_consumed(running, timeout_s=STARTUP_TIMEOUT_S)
            seconds = time.perf_counter() - started
            await space.publish(
                space.names.plans_exchange, plan_bodies(1, 1, prefix=space.names.namespace)
            )
            deadline = time.perf_counter() + STARTUP_TIMEOUT_S
            while not running.said("checkpoint of"):
                running.check_alive()
                if time.perf_counter() > deadline:
                    raise BenchError("the worker wrote no checkpoint in time")
                await asyncio.sleep(0.2)
        finally:
            running.stop()
        started = time.perf_counter()
        again = Candidate(WORKER, url, space.names.namespace, 32, OPTIMISER_DEDUP_WINDOW_S="86400")
        try:
            await space.until_consumed(again, timeout_s=STARTUP_TIMEOUT_S)
            checkpoint_seconds = time.perf_counter() - started
            if not again.said("checkpoints of"):
                raise BenchError(f"the second worker did not load checkpoints: {again.output()}")
        finally:
            again.stop()
    return StartUp(records, seconds, running.peak_rss_mb, checkpoint_seconds, again.peak_rss_mb)


def _day_record(n: int, at: datetime) -> EnactmentRecord:
    return EnactmentRecord(
        plan_id=f"day-{n // 10}",
        action=ImprovementAction(
            action_id=f"day-{n}",
            module_name=f"cognition.module_{n % 50}",
            action_kind=ActionKind.NO_OP if n % 4 else ActionKind.TUNE_THRESHOLD,
        ),
        status=EnactmentStatus.SKIPPED if n % 4 else EnactmentStatus.SUCCESS,
        detail="no-op" if n % 4 else "threshold 200.0 -> 220.0 ms",
        attempted_at=at,
    )


# --- the whole set, alternating candidates round by round ---------------------------------------


@dataclass(frozen=True)
class Budget:
    """How much to run: the default, or ``quick()`` for a smoke test."""

    rounds: int = 5
    curve_rounds: int = 3
    total_actions: int = 20_000
    apn_points: tuple[int, ...] = (1, 10, 100, 1000)
    prefetch_points: tuple[int, ...] = (1, 10, 32, 200)
    latency_seconds: float = 10.0
    idle_plans_per_s: float = 10.0
    backlogs: tuple[int, ...] = (1_000, 100_000)
    startup_records: tuple[int, ...] = (0, 10_000, 100_000, 1_000_000)

    @classmethod
    def quick(cls) -> Budget:
        return cls(
            rounds=1, curve_rounds=1, total_actions=400, apn_points=(1, 10), prefetch_points=(32,),
            latency_seconds=1.0, backlogs=(200, 1_000), startup_records=(0, 1_000),
        )  # fmt: skip


def points(plan: Budget) -> Iterator[tuple[str, Scenario, int]]:
    """(curve, scenario, rounds); the default scenario is the head-to-head, with more rounds."""
    base = Scenario(total_actions=plan.total_actions)
    yield "head-to-head", base, plan.rounds
    for apn in plan.apn_points:
        if apn != base.actions_per_plan:
            yield "actions per plan", replace(base, actions_per_plan=apn), plan.curve_rounds
    for prefetch in plan.prefetch_points:
        if prefetch != base.prefetch:
            yield "prefetch", replace(base, prefetch=prefetch), plan.curve_rounds
    yield "queue type", replace(base, queue_type="classic"), plan.curve_rounds


async def run_all(url: str, plan: Budget, *, say: Any = print) -> dict[str, Any]:
    runs: list[Run] = []
    for curve, scenario, rounds in points(plan):
        say(f"{curve}: {scenario.label()}, {rounds} round(s)")
        for round_ in range(rounds):
            for candidate in CANDIDATES:
                run = await throughput(candidate, url, scenario)
                runs.append(run)
                say(f"  round {round_ + 1} {candidate:<20} {run.actions_per_s:>9,.0f} actions/s")
    base = Scenario(total_actions=plan.total_actions)
    peak = {
        c: _median([r for r in runs if r.candidate == c and r.scenario == base]) for c in CANDIDATES
    }
    rates = {
        c: {"idle": plan.idle_plans_per_s, "50% of peak": 0.5 * peak[c] / base.actions_per_plan}
        for c in CANDIDATES
    }
    waits: dict[tuple[str, str], list[Waits]] = {}
    for load in ("idle", "50% of peak"):
        for round_ in range(plan.curve_rounds):
            for candidate in CANDIDATES:
                run_w = await latency(
                    candidate, url, plans_per_s=rates[candidate][load], seconds=plan.latency_seconds
                )
                waits.setdefault((candidate, load), []).append(run_w)
                one = pooled([run_w])
                say(
                    f"  latency round {round_ + 1} {candidate:<20} at {one.plans_per_s:>7,.0f} "
                    f"plans/s: p50 {one.p50_ms:.1f} ms, p99 {one.p99_ms:.1f} ms"
                )
    latencies = []  # each candidate's idle, then its 50% of peak: the order report.py reads
    for candidate in CANDIDATES:
        for load in ("idle", "50% of peak"):
            result = pooled(waits[(candidate, load)])
            latencies.append(result)
            say(
                f"latency {candidate:<20} {load} ({result.plans_per_s:,.0f} plans/s, "
                f"{result.rounds} rounds pooled): p50 {result.p50_ms:.1f} ms, "
                f"p99 {result.p99_ms:.1f} ms"
            )
    memories = []
    for backlog in plan.backlogs:
        # The same work for every backlog: half of the smallest one.
        processed = min(5_000, min(plan.backlogs) * 10 // 2)
        result_m = await memory(url, backlog=backlog, processed=processed)
        memories.append(result_m)
        say(
            f"memory with a backlog of {backlog:,} plans, first {processed:,} actions: "
            f"peak {result_m.peak_rss_mb:.1f} MB"
        )
    startups = []
    for records in plan.startup_records:
        result_s = await startup(url, records=records)
        startups.append(result_s)
        say(
            f"start-up with {records:,} records in the state window: {result_s.seconds:.2f} s, "
            f"peak {result_s.peak_rss_mb:.0f} MB"
        )
    return {
        "runs": [r.as_dict() for r in runs],
        "latency": [x.as_dict() for x in latencies],
        "memory": [m.as_dict() for m in memories],
        "startup": [s.as_dict() for s in startups],
    }


def _median(runs: list[Run]) -> float:
    return statistics.median(r.actions_per_s for r in runs)
