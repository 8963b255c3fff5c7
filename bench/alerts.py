"""``python -m bench.alerts``: the shipped alert rules, evaluated by a real Prometheus.

Each scenario gets a stack of its own: a RabbitMQ node with ``rabbitmq_prometheus`` (started
from the installed ``rabbitmq-server``, never the system broker), ``self-optimiser run`` in
namespace ``optimiser`` (the name the rules use) behind a TCP proxy that can cut it off, a
subsystem server whose orchestrator fails every swap when told to, a planner at one plan a
second, and Debian's ``prometheus`` scraping the worker and the broker's per-queue endpoint
every 2 s with ``deploy/prometheus/alerts.yml`` loaded as shipped (no ``for`` shortened).

The scenario creates each alert's condition in turn and marks when; a watcher reads
``/api/v1/alerts`` every 2 s. The report gives, per alert, when it went pending and fired
after its condition was created, when it went quiet after the condition was removed, and
every moment it was pending or firing outside its conditions (quiet when healthy).

``faults`` (~35 min): failing swaps, a breaker, a parked plan, an unbound state stream, a
worker cut off from the broker, a worker killed and a plan dead-lettered meanwhile.
``long`` (~67 min): a review item left waiting and a pause left in force, for the two alerts
that wait an hour. Both by default, side by side. Writes ``bench/results/alerts-<time>.md``
and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika

from schemas import ActionKind, ImprovementAction, Plan, encode
from schemas.names import Names
from tests.support.processes import ROOT, WorkerProcess
from tests.support.proxy import SilencingProxy
from tests.support.rabbit_nodes import RabbitNode, free_port
from worker.core.seed import seed_subsystems
from worker.demo.simulated import SimulatedCycle, SwapOutcome, SwapResult
from worker.subsystems.server import SubsystemServer

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RESULTS = Path(__file__).with_name("results")
NAMESPACE = "optimiser"
#: The queue a ReflectionCycle reads records from (deploy: `N.reflection.*`).
REFLECTION_QUEUE = f"{NAMESPACE}.reflection.bench"
SCRAPE_S = 2
JSON = "application/json"
#: Guardrails out of the way of the load (the scenario creates failures, not refusals).
WORKER_SETTINGS = {
    "swap_budget": "1000000",
    "change_budget": "1000000",
    "cool_down_s": "1",
    "stabilization_window_s": "0",
    "bound_period_s": "0",
}


class Orchestrator:
    """Swaps that succeed, or all fail while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = False

    async def orchestrate_swap(self, request: Any) -> SwapResult:
        await asyncio.sleep(0.005)
        if self.failing:
            return SwapResult(SwapOutcome.ROLLED_BACK, "health check failed after swap")
        return SwapResult(SwapOutcome.SUCCESS, f"now at {request.new_version}")


@dataclass
class Expectation:
    """``alert`` should follow the condition created at ``start`` and removed at ``end``."""

    alert: str
    condition: str
    start: float
    end: float | None = None


@dataclass
class Stack:
    """One scenario's broker node, worker, subsystem server, planner and Prometheus."""

    name: str
    base: Path
    node: RabbitNode = field(init=False)
    proxy: SilencingProxy = field(init=False)
    worker: WorkerProcess = field(init=False)
    orchestrator: Orchestrator = field(default_factory=Orchestrator)
    prometheus: subprocess.Popen[bytes] | None = None
    prometheus_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    broker_metrics_port: int = field(default_factory=free_port)
    started: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)
    transitions: list[tuple[float, str, str]] = field(default_factory=list)
    expectations: list[Expectation] = field(default_factory=list)
    plan: Callable[[int], list[ImprovementAction]] | None = None
    planning: bool = True
    scale: float = 1.0  # < 1: a smoke run of the mechanics, too short for the alerts
    plans_sent: int = 0
    #: The worker's log lines, each process's in turn (saved next to the results).
    said: list[str] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> float:
        return time.monotonic() - self.started

    def expect(self, alert: str, condition: str, start: float, end: float | None) -> None:
        self.expectations.append(Expectation(alert, condition, start, end))

    def mark(self, what: str) -> float:
        at = self.now()
        self.events.append((at, what))
        self.said.extend(self._take_lines())
        self.said.append(f"--- [{self.name} {at:7.1f}s] {what}")
        print(f"[{self.name} {at:7.1f}s] {what}", flush=True)
        return at

    def _take_lines(self) -> list[str]:
        worker: WorkerProcess | None = getattr(self, "worker", None)
        if worker is None:
            return []
        taken, worker.lines[:] = list(worker.lines), []
        return taken

    async def start(self) -> None:
        self.node = RabbitNode(
            self.base / "node",
            cookie=uuid.uuid4().hex,
            plugins=("rabbitmq_prometheus",),
            config=(
                f"prometheus.tcp.port = {self.broker_metrics_port}\nprometheus.tcp.ip = 127.0.0.1\n"
            ),
        )
        await asyncio.to_thread(self.node.start)
        self.proxy = SilencingProxy(("127.0.0.1", self.node.port))
        await self.proxy.start()
        self.worker = WorkerProcess(
            f"amqp://guest:guest@127.0.0.1:{self.proxy.port}/",
            NAMESPACE,
            metrics_host="127.0.0.1",
            metrics_port=str(self.metrics_port),
            **WORKER_SETTINGS,
        )
        await self.worker.start()
        await self.worker.wait_consuming(timeout=60)
        await self._reflection()
        server_ready = asyncio.Event()
        server = SubsystemServer(self.node.url(), NAMESPACE)
        subsystems = seed_subsystems(SimulatedCycle(), self.orchestrator)
        self._tasks.append(
            asyncio.create_task(server.serve(subsystems, stop=self._stop, ready=server_ready))
        )
        await asyncio.wait_for(server_ready.wait(), 30)
        self._start_prometheus()
        await self._first_scrape()
        self.started = time.monotonic()
        self._tasks.append(asyncio.create_task(self._plan()))
        self._tasks.append(asyncio.create_task(self._watch()))
        self.mark("stack up: worker ready, planner at 1 plan/s, Prometheus scraping every 2 s")

    async def _reflection(self) -> None:
        """What a ReflectionCycle binds to N.results (its newest records kept, the rest
        dropped): without a queue there every record is unroutable."""
        names = Names(NAMESPACE)
        connection = await aio_pika.connect(self.node.url())
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(
                REFLECTION_QUEUE, durable=True, arguments={"x-max-length": 1000}
            )
            await queue.bind(names.results_exchange, "#")

    def _start_prometheus(self) -> None:
        folder = self.base / "prometheus"
        folder.mkdir(parents=True)
        config = folder / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": f"{SCRAPE_S}s",
                        "evaluation_interval": f"{SCRAPE_S}s",
                    },
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "self-optimiser",
                            "static_configs": [{"targets": [f"127.0.0.1:{self.metrics_port}"]}],
                        },
                        {
                            "job_name": "rabbitmq-detailed",
                            "metrics_path": "/metrics/detailed",
                            "params": {"family": ["queue_coarse_metrics", "queue_consumer_count"]},
                            "static_configs": [
                                {"targets": [f"127.0.0.1:{self.broker_metrics_port}"]}
                            ],
                        },
                    ],
                }
            )
        )
        log = (folder / "prometheus.log").open("ab")
        self.prometheus = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def _first_scrape(self) -> None:
        """Until Prometheus has scraped both targets and evaluated the rules after that: before
        its first scrape, ``absent(up{...})`` holds and OptimiserWorkerDown goes pending."""
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?query=sum(up)"
        async with asyncio.timeout(60):
            while True:
                with contextlib.suppress(OSError, KeyError, IndexError, ValueError):
                    if await asyncio.to_thread(_value, url) == 2:  # both targets
                        break
                await asyncio.sleep(0.5)
        await asyncio.sleep(2 * SCRAPE_S)

    async def _plan(self) -> None:
        connection = await aio_pika.connect_robust(self.node.url())
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(Names(NAMESPACE).plans_exchange)
            while not self._stop.is_set():
                if self.planning and self.plan is not None:
                    self.plans_sent += 1
                    actions = self.plan(self.plans_sent)
                    body = encode(Plan(plan_id=f"{self.name}-{self.plans_sent}", actions=actions))
                    await exchange.publish(
                        aio_pika.Message(body, content_type=JSON), routing_key=""
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)

    async def _watch(self) -> None:
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/alerts"
        state: dict[str, str] = {}
        while not self._stop.is_set():
            try:
                now = await asyncio.to_thread(_alerts, url)
            except OSError:
                now = None
            if now is not None:
                for alert in sorted(set(state) | set(now)):
                    was, is_ = state.get(alert, "inactive"), now.get(alert, "inactive")
                    if was != is_:
                        at = self.now()
                        self.transitions.append((at, alert, is_))
                        print(f"[{self.name} {at:7.1f}s]   {alert}: {is_}", flush=True)
                state = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SCRAPE_S)

    async def until(self, since: float, seconds: float) -> None:
        """Sleep until ``seconds`` (times ``scale``) after the moment ``since``."""
        await asyncio.sleep(max(0.0, since + seconds * self.scale - self.now()))

    async def cli(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.cli", *args, cwd=ROOT,
            env={**os.environ, "OPTIMISER_AMQP_URL": self.node.url(),
                 "OPTIMISER_NAMESPACE": NAMESPACE},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await process.communicate()
        return out.decode(errors="replace").strip()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.prometheus is not None:
            self.prometheus.terminate()
            self.prometheus.wait(30)
        with contextlib.suppress(Exception):
            await self.worker.stop()
        self.said.extend(self._take_lines())
        with contextlib.suppress(Exception):
            await self.proxy.close()
        await asyncio.to_thread(self.node.stop)

    def report(self) -> list[dict[str, Any]]:
        rows = []
        for each in self.expectations:
            mine = [(t, s) for t, a, s in self.transitions if a == each.alert and t >= each.start]
            pending = next((t for t, s in mine if s == "pending"), None)
            firing = next((t for t, s in mine if s == "firing"), None)
            quiet = None
            if each.end is not None:
                quiet = next((t for t, s in mine if s == "inactive" and t >= each.end), None)
            rows.append(
                {
                    "stack": self.name,
                    "alert": each.alert,
                    "condition": each.condition,
                    "created_at_s": round(each.start, 1),
                    "pending_after_s": _after(pending, each.start),
                    "firing_after_s": _after(firing, each.start),
                    "removed_at_s": None if each.end is None else round(each.end, 1),
                    "quiet_after_removal_s": _after(quiet, each.end),
                }
            )
        return rows

    def noise(self) -> list[dict[str, Any]]:
        """Every pending or firing spell of an alert outside the windows of its conditions
        (a condition's window lasts until the alert is quiet again after its removal)."""
        windows: dict[str, list[tuple[float, float]]] = {}
        for row, each in zip(self.report(), self.expectations, strict=True):
            end = float("inf")
            if each.end is not None and row["quiet_after_removal_s"] is not None:
                end = each.end + row["quiet_after_removal_s"] + SCRAPE_S
            windows.setdefault(each.alert, []).append((each.start, end))
        spells = []
        for at, alert, state in self.transitions:
            if state == "inactive":
                continue
            if not any(start <= at <= end for start, end in windows.get(alert, [])):
                spells.append({"stack": self.name, "alert": alert, "state": state, "at_s": at})
        return spells


async def _depth(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


def _after(moment: float | None, start: float | None) -> float | None:
    return None if moment is None or start is None else round(moment - start, 1)


def _value(url: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        return float(json.load(response)["data"]["result"][0]["value"][1])


def _alerts(url: str) -> dict[str, str]:
    """alertname -> "firing" if any of its series fires, else "pending"."""
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    states: dict[str, str] = {}
    for alert in body["data"]["alerts"]:
        name = alert["labels"]["alertname"]
        if states.get(name) != "firing":
            states[name] = alert["state"]
    return states


def _action(kind: ActionKind, module: str, action_id: str, **parameters: str) -> ImprovementAction:
    return ImprovementAction(
        action_id=action_id, module_name=module, action_kind=kind, parameters=parameters
    )


async def faults(stack: Stack) -> None:
    """The conditions of nine alerts, one after the other, with healthy spells between."""
    rng = random.Random(7)

    def plan(n: int) -> list[ImprovementAction]:
        # One change that works and one swap a plan; while the orchestrator fails, the swap
        # goes to a module never seen before (each its first event), and every tenth to
        # "ranker" (whose breaker opens after three).
        swap = f"module-{n % 60}"
        if stack.orchestrator.failing:
            swap = "ranker" if n % 10 == 0 else f"new-{n}-{rng.randrange(1000)}"
        return [
            _action(ActionKind.NO_OP, "planner", f"noop-{n}"),
            _action(ActionKind.HOT_SWAP_MODULE, swap, f"swap-{n}"),
        ]

    stack.plan = plan
    connection = await aio_pika.connect(stack.node.url())
    async with connection:
        channel = await connection.channel()
        await stack.until(0, 240)  # four healthy minutes: every alert quiet
        await _failing_swaps(stack)
        await _parked(stack, channel)
        await _unroutable(stack, channel)
        await _cut_off(stack)
        await _killed(stack, channel)
    stack.mark("end")


async def _failing_swaps(stack: Stack) -> None:
    start = stack.mark("orchestrator fails every swap (half of all actions FAILED)")
    stack.orchestrator.failing = True
    await stack.until(start, 660)
    end = stack.mark("orchestrator healthy again")
    stack.orchestrator.failing = False
    stack.expect("OptimiserEnactmentFailureRateHigh", "50% of actions FAILED", start, end)
    stack.expect("OptimiserHotSwapSuccessRateLow", "every swap FAILED", start, end)
    reset = stack.mark("breakers reset ranker HOT_SWAP_MODULE")
    print(await stack.cli("breakers", "reset", "ranker", "HOT_SWAP_MODULE", "--by", "bench"))
    stack.expect("OptimiserBreakerOpen", "ranker's swaps FAILED 3 times", start, reset)
    # The breaker sends one review item, left in the queue (the long scenario waits it out).
    stack.expect("OptimiserReviewBacklog", "the breaker's review item", start, None)


async def _parked(stack: Stack, channel: aio_pika.abc.AbstractChannel) -> None:
    names = Names(NAMESPACE)
    parked = stack.mark("one unreadable plan published (parked)")
    exchange = await channel.get_exchange(names.plans_exchange)
    garbled = aio_pika.Message(b'{"plan_id": "garbled", "actions": [', content_type=JSON)
    await exchange.publish(garbled, routing_key="")
    await stack.until(parked, 120)
    purged = stack.mark(f"{names.invalid_queue} purged")
    invalid = await channel.declare_queue(names.invalid_queue, passive=True)
    await invalid.purge()
    stack.expect("OptimiserPlansParked", "a plan parked", parked, purged)


async def _unroutable(stack: Stack, channel: aio_pika.abc.AbstractChannel) -> None:
    names = Names(NAMESPACE)
    reflection = await channel.declare_queue(REFLECTION_QUEUE, passive=True)
    unbound = stack.mark(f"{REFLECTION_QUEUE} unbound from {names.results_exchange}")
    await reflection.unbind(names.results_exchange, "#")
    await asyncio.sleep(10)
    rebound = stack.mark("bound again")
    await reflection.bind(names.results_exchange, "#")
    stack.expect("OptimiserRecordsUnroutable", "no queue bound to N.results", unbound, rebound)
    await stack.until(rebound, 60)


async def _cut_off(stack: Stack) -> None:
    cut = stack.mark("the worker's connections cut (proxy refuses; worker up, not ready)")
    stack.proxy.cut()
    await stack.until(cut, 420)
    restored = stack.mark("proxy lets the worker through again")
    stack.proxy.restore()
    stack.expect("OptimiserNotReady", "worker cut off from the broker", cut, restored)
    stack.expect("OptimiserPlansWaitingWithoutConsumer", "no consumer reachable", cut, restored)
    await stack.until(restored, 120)


async def _killed(stack: Stack, channel: aio_pika.abc.AbstractChannel) -> None:
    names = Names(NAMESPACE)
    stack.planning = False
    while await _depth(channel, names.plans_queue):  # noqa: ASYNC110 - the broker's count
        await asyncio.sleep(0.5)
    killed = stack.mark("worker SIGKILLed")
    stack.worker.kill()
    await stack.worker.wait(30)
    poisoned = stack.mark("a plan nacked with requeue by another consumer until dead-lettered")
    poison = Plan(plan_id="poison", actions=[_action(ActionKind.NO_OP, "planner", "poison")])
    exchange = await channel.get_exchange(names.plans_exchange)
    await exchange.publish(aio_pika.Message(encode(poison), content_type=JSON), routing_key="")
    deliveries = await _nack_until_gone(stack, names.plans_queue)
    stack.mark(f"dead-lettered after {deliveries} deliveries; planner resumes")
    stack.planning = True
    await stack.until(killed, 420)
    restarted = stack.mark("worker started again")  # its lines taken: wait_consuming sees new ones
    await stack.worker.start()
    await stack.worker.wait_consuming(timeout=60)
    consuming = stack.mark("worker consuming again")
    stack.expect("OptimiserNotReady", "worker restoring its state", restarted, consuming)
    stack.expect("OptimiserWorkerDown", "worker killed", killed, restarted)
    stack.expect("OptimiserPlansWaitingWithoutConsumer", "no worker", killed, restarted)
    await stack.until(restarted, 60)
    drained = stack.mark(f"{names.dead_queue} purged")
    dead = await channel.declare_queue(names.dead_queue, passive=True)
    await dead.purge()
    stack.expect("OptimiserPlansDeadLettered", "a plan dead-lettered", poisoned, drained)
    await stack.until(drained, 180)


async def _nack_until_gone(stack: Stack, queue_name: str) -> int:
    """Take the only plan in the queue and give it back until the broker dead-letters it."""
    deliveries = 0
    connection = await aio_pika.connect(stack.node.url())
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(queue_name, passive=True)
        async with queue.iterator(timeout=5) as messages:
            with contextlib.suppress(TimeoutError):
                async for message in messages:
                    deliveries += 1
                    await message.nack(requeue=True)
    return deliveries


async def long(stack: Stack) -> None:
    """A review item left waiting and a pause left in force: the two alerts of an hour."""
    stack.plan = lambda n: [_action(ActionKind.NO_OP, "planner", f"noop-{n}")]
    await stack.until(0, 60)
    flagged = stack.mark("one FLAG_FOR_REVIEW action enacted; the item is left in the queue")
    review = Plan(
        plan_id="flag", actions=[_action(ActionKind.FLAG_FOR_REVIEW, "memory.index", "flag-1")]
    )
    connection = await aio_pika.connect(stack.node.url())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(Names(NAMESPACE).plans_exchange)
        await exchange.publish(aio_pika.Message(encode(review), content_type=JSON), routing_key="")
    await asyncio.sleep(2)
    paused = stack.mark("paused")
    print(await stack.cli("pause", "--reason", "bench: left paused", "--by", "bench"))
    await stack.until(paused, 3600 + 420)
    acked = stack.mark("review item acknowledged, resumed")
    print(await stack.cli("review", "ack", "flag-1"))
    print(await stack.cli("resume", "--by", "bench"))
    stack.expect("OptimiserReviewBacklog", "a review item waiting", flagged, acked)
    stack.expect("OptimiserPausedTooLong", "paused", paused, acked)
    await stack.until(acked, 60)
    stack.mark("end")


SCENARIOS: dict[str, Callable[[Stack], Awaitable[None]]] = {"faults": faults, "long": long}


async def run(chosen: list[str], scale: float) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    stacks = [Stack(name, base / name, scale=scale) for name in chosen]
    try:
        await asyncio.gather(*(stack.start() for stack in stacks))
        await asyncio.gather(*(SCENARIOS[stack.name](stack) for stack in stacks))
    finally:
        await asyncio.gather(*(stack.stop() for stack in stacks), return_exceptions=True)
        shutil.rmtree(base, ignore_errors=True)
    return {
        "rows": [row for stack in stacks for row in stack.report()],
        "outside_conditions": [spell for stack in stacks for spell in stack.noise()],
        "events": {stack.name: stack.events for stack in stacks},
        "transitions": {stack.name: stack.transitions for stack in stacks},
        "worker_logs": {stack.name: stack.said for stack in stacks},
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| alert | condition | created at | pending after | firing after | removed at | "
        "quiet again after |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        cells = [
            row["alert"], row["condition"], _s(row["created_at_s"]), _s(row["pending_after_s"]),
            _s(row["firing_after_s"]), _s(row["removed_at_s"]), _s(row["quiet_after_removal_s"]),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    spells = results["outside_conditions"]
    lines.append("")
    lines.append(f"Pending or firing outside its conditions: {len(spells) or 'never'}.")
    for spell in spells:
        lines.append(
            f"- {spell['stack']}: {spell['alert']} {spell['state']} at {spell['at_s']:.0f}s"
        )
    return "\n".join(lines) + "\n"


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.alerts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="faults, long (both)")
    parser.add_argument(
        "--smoke", action="store_true", help="every wait 1/20 as long: the mechanics only"
    )
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if shutil.which("prometheus") is None:
        print("bench.alerts needs Debian's prometheus package (apt-get install prometheus)")
        return 1
    results = asyncio.run(run(args.scenarios or list(SCENARIOS), 0.05 if args.smoke else 1.0))
    results["command"] = "python -m bench.alerts " + " ".join(sys.argv[1:])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    for name, said in results.pop("worker_logs").items():  # the worker's own words, for a why
        (RESULTS / f"alerts-{stamp}-{name}.log").write_text("\n".join(said) + "\n")
    (RESULTS / f"alerts-{stamp}.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (RESULTS / f"alerts-{stamp}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
