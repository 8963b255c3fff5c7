"""The whole loop on a real broker, in one command: ``self-optimiser demo``.

A simulated planner publishes plans to ``N.plans``; the worker (the real one) enacts them and
sends commands to a simulated CognitiveCycle and orchestrator served by ``SubsystemServer``;
records land on ``N.results`` and are printed as they come, with the detector threshold and
the budgets as they move. Everything runs in this process, each part on its own connection,
in a namespace of its own that is deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Callable
from dataclasses import replace

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import CollectorRegistry

from schemas import decode_record, encode
from schemas.names import Names
from worker.amqp.topology import QueueState, declare, queue_states
from worker.amqp.worker import Worker
from worker.core.config import OptimiserConfig
from worker.core.seed import seed_subsystems
from worker.demo.simulated import (
    DemoReport,
    SimulatedCycle,
    SimulatedOrchestrator,
    SimulatedPlanner,
)
from worker.ops.format import format_record
from worker.settings import WorkerSettings
from worker.subsystems.server import SubsystemServer

#: Every this many plans, the planner sends one the worker cannot read (it is parked).
BAD_PLAN_EVERY = 12


async def run_live_demo(
    settings: WorkerSettings,
    *,
    duration_s: float,
    dry_run: bool = False,
    interval_s: float = 0.25,
    seed: int | None = None,
    out: Callable[[str], None] = print,
) -> DemoReport:
    """Run the loop for ``duration_s`` seconds on ``settings.amqp_url``; return what it did."""
    rng = random.Random(seed)
    namespace = f"{settings.namespace}-demo-{uuid.uuid4().hex[:6]}"
    settings = replace(
        settings,
        namespace=namespace,
        metrics_port=-1,
        optimiser=OptimiserConfig(cool_down_s=2.0, dry_run=dry_run, subsystem_timeout_s=5.0),
    )
    names = Names(namespace)
    cycle = SimulatedCycle()
    report = DemoReport()
    stop_parts = asyncio.Event()

    connection = await aio_pika.connect_robust(
        settings.amqp_url, client_properties={"connection_name": f"demo {namespace}"}
    )
    try:
        channel = await connection.channel(publisher_confirms=True)
        await declare(channel, names)
        results = await channel.declare_queue(exclusive=True, auto_delete=True)
        await results.bind(names.results_exchange, "#")

        async def show(message: AbstractIncomingMessage) -> None:
            record = decode_record(message.body)
            report.statuses[record.status.value] += 1
            out("   " + format_record(record))

        await results.consume(show, no_ack=True)

        server = SubsystemServer(settings.amqp_url, namespace)
        server_ready = asyncio.Event()
        parts = [
            asyncio.create_task(
                server.serve(
                    seed_subsystems(cycle, SimulatedOrchestrator(rng)),
                    stop=stop_parts,
                    ready=server_ready,
                )
            ),
        ]
        registry = CollectorRegistry()
        worker = Worker(settings, registry=registry)
        parts.append(asyncio.create_task(worker.run(stop_parts)))
        await _until(lambda: worker.readiness()[0] and server_ready.is_set(), parts)

        mode = "dry-run: nothing is enacted" if dry_run else "enacting"
        out(f"self-optimiser demo on {settings.safe_url}, namespace {namespace}, {mode}")
        out("   planner -> N.plans -> worker -> commands -> cycle, orchestrator; records below")
        published = await _plan_for(
            duration_s=duration_s, interval_s=interval_s, rng=rng, channel=channel,
            names=names, cycle=cycle, report=report, out=out,
        )  # fmt: skip

        def consumed() -> float:
            return sum(
                registry.get_sample_value("asi_optimiser_plans_consumed_total", {"outcome": o})
                or 0.0
                for o in ("acked", "parked")
            )

        # Let the last plans land before stopping everything.
        await _settle(
            lambda: consumed() >= report.plans and sum(report.statuses.values()) >= published,
            timeout_s=10.0,
        )
        depths = await queue_states(connection, names.watched)
        report.review_items = _messages(depths["review"])
        report.parked = _messages(depths["invalid"])
        stop_parts.set()
        await asyncio.gather(*parts)
        await _delete_namespace(connection, names)
    finally:
        stop_parts.set()
        await connection.close()

    report.final_threshold_ms = cycle._detector_config.latency_p95_threshold_ms
    report.final_budgets = dict(cycle._budget_map)
    out(
        f"done: {report.plans} plans; {report.counts()}; {report.review_items} sent for review; "
        f"{report.parked} unreadable plan(s) parked"
    )
    return report


async def _plan_for(
    *,
    duration_s: float,
    interval_s: float,
    rng: random.Random,
    channel: aio_pika.abc.AbstractChannel,
    names: Names,
    cycle: SimulatedCycle,
    report: DemoReport,
    out: Callable[[str], None],
) -> int:
    """Publish plans until the time is up; return how many actions they carried."""
    planner = SimulatedPlanner(rng)
    plans = await channel.get_exchange(names.plans_exchange)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration_s
    actions = 0
    while loop.time() < deadline:
        report.plans += 1
        if report.plans % BAD_PLAN_EVERY == 0:
            body, what = b'{"plan_id": "garbled", "actions": [', "an unreadable plan"
        else:
            plan = planner.next_plan()
            body, what = encode(plan), f"{plan.plan_id}: {len(plan.actions)} actions"
            actions += len(plan.actions)
        await plans.publish(aio_pika.Message(body, content_type="application/json"), routing_key="")
        budgets = ", ".join(f"{m}={b:.2f}s" for m, b in sorted(cycle._budget_map.items()))
        out(
            f"-- planner sent {what}  |  p95 threshold "
            f"{cycle._detector_config.latency_p95_threshold_ms:.1f}ms; "
            f"budgets {budgets or '(defaults)'}"
        )
        await asyncio.sleep(min(interval_s, max(0.0, deadline - loop.time())))
    return actions


async def _until(condition: Callable[[], bool], parts: list[asyncio.Task[None]]) -> None:
    """Wait for ``condition``; if a part dies first, raise what killed it."""
    async with asyncio.timeout(30):
        while not condition():
            for part in parts:
                if part.done():
                    part.result()
            await asyncio.sleep(0.05)


async def _settle(condition: Callable[[], bool], *, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while not condition():  # noqa: ASYNC110 - polls counters other tasks change
                await asyncio.sleep(0.05)


def _messages(state: QueueState | None) -> int:
    return 0 if state is None else state.messages


async def _delete_namespace(connection: aio_pika.abc.AbstractConnection, names: Names) -> None:
    channel = await connection.channel()
    for queue in names.queues:
        await channel.queue_delete(queue)
    for exchange in names.exchanges:
        await channel.exchange_delete(exchange)
