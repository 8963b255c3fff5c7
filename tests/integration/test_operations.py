"""The commands for the people on call, end to end against the real broker: publish, tail,
status, pause and resume, and the review queue. Each runs as ``main([...])`` does for a user."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from schemas import EnactmentRecord, EnactmentStatus, decode_action, decode_record, encode
from schemas.control import ControlCommand, ControlMessage
from tests.support.broker import Broker
from tests.support.factories import no_op_plan, plan_of, wait_for
from tests.support.subsystems import SwapOutcome, seed_cycle, seed_orchestrator
from tests.support.workers import RunningWorker, WorkerStarter
from worker import OptimiserConfig
from worker.amqp.errors import TopologyMismatch
from worker.cli import main
from worker.core.seed import seed_subsystems


@pytest.fixture
def cli_env(amqp_url: str, broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The commands talk to the test's broker and namespace, as a user's environment says."""
    monkeypatch.setenv("OPTIMISER_AMQP_URL", amqp_url)
    monkeypatch.setenv("OPTIMISER_NAMESPACE", broker.names.namespace)
    return


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``self-optimiser ARGV`` in a thread (it runs its own event loop): code, stdout, stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def records_of(
    broker: Broker, queue: aio_pika.abc.AbstractQueue, count: int
) -> list[EnactmentRecord]:
    got: list[EnactmentRecord] = []
    async with asyncio.timeout(20), queue.iterator() as incoming:
        async for message in incoming:
            await message.ack()
            got.append(decode_record(message.body))
            if len(got) == count:
                return got
    return got


@pytest.mark.usefixtures("cli_env")
async def test_pause_skips_every_action_survives_a_restart_and_resume_enacts_again(
    broker: Broker, start_worker: WorkerStarter, capsys: pytest.CaptureFixture[str]
) -> None:
    cycle = seed_cycle()
    worker = await start_worker(subsystems=seed_subsystems(cycle, None))
    records = await broker.results_queue()

    code, out, _ = await run_cli(capsys, "pause", "--reason", "incident 42", "--by", "alice")
    assert code == 0, out
    assert "paused namespace" in out
    await wait_for(lambda: worker.worker.paused is not None, what="the worker to see the pause")

    await broker.publish_plan(plan_of("TUNE_THRESHOLD", "FLAG_FOR_REVIEW", "NO_OP", plan_id="a"))
    paused = await records_of(broker, records, 3)
    assert {(r.status, r.detail) for r in paused} == {
        (EnactmentStatus.SKIPPED, "paused: incident 42")
    }
    assert cycle._detector_config.latency_p95_threshold_ms == 200.0  # nothing touched
    assert await broker.depth(broker.names.review_queue) == 0
    assert worker.metric("asi_optimiser_paused") == 1.0
    since = worker.metric("asi_optimiser_paused_since_timestamp_seconds")
    assert abs(since - datetime.now(UTC).timestamp()) < 60
    readyz = await asyncio.to_thread(_get, f"http://127.0.0.1:{worker.worker.metrics_port}/readyz")
    assert "PAUSED" in readyz
    assert "incident 42" in readyz
    assert "alice" in readyz

    code, out, _ = await run_cli(capsys, "status")
    assert code == 0
    assert "PAUSED since" in out
    assert "by alice: incident 42" in out
    assert "1 worker(s) consuming" in out

    # The pause lives in the broker: a new worker starts paused.
    await worker.shutdown()
    restarted = await start_worker(subsystems=seed_subsystems(cycle, None))
    assert restarted.worker.paused is not None
    await broker.publish_plan(plan_of("TUNE_THRESHOLD", plan_id="b"))
    [still] = await records_of(broker, records, 1)
    assert still.detail == "paused: incident 42"

    code, out, _ = await run_cli(capsys, "resume", "--by", "alice")
    assert code == 0
    assert "resumed" in out
    await wait_for(lambda: restarted.worker.paused is None, what="the worker to resume")
    await broker.publish_plan(plan_of("TUNE_THRESHOLD", plan_id="c"))
    [enacted] = await records_of(broker, records, 1)
    assert enacted.status is EnactmentStatus.SUCCESS
    assert cycle._detector_config.latency_p95_threshold_ms != 200.0
    assert restarted.metric("asi_optimiser_paused") == 0.0
    code, out, _ = await run_cli(capsys, "status", "--json")
    status = json.loads(out)
    assert status["paused"] is False
    assert status["control"]["command"] == "resume"
    assert status["queues"]["plans"]["consumers"] == 1


async def test_a_pause_stops_the_rest_of_a_plan_in_hand(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    """Checked before each action: a pause read while a plan is enacted stops its remaining
    actions (the kill switch does not wait for the plan to end)."""
    started = asyncio.Event()
    release = asyncio.Event()
    cycle = seed_cycle()

    async def slow_shed(*_: object) -> None:
        started.set()
        await release.wait()

    cycle._load_shedder.shed.side_effect = slow_shed
    worker: RunningWorker = await start_worker(subsystems=seed_subsystems(cycle, None))
    records = await broker.results_queue()
    await broker.publish_plan(plan_of("REDUCE_LOAD", "TUNE_THRESHOLD", "NO_OP", plan_id="d"))
    async with asyncio.timeout(20):
        await started.wait()
    await _publish_control(broker, ControlMessage(
        command=ControlCommand.PAUSE, reason="stop now", issued_at=datetime.now(UTC)
    ))  # fmt: skip
    await wait_for(lambda: worker.worker.paused is not None, what="the pause")
    release.set()
    got = await records_of(broker, records, 3)
    assert [r.status for r in got] == [
        EnactmentStatus.SUCCESS, EnactmentStatus.SKIPPED, EnactmentStatus.SKIPPED
    ]  # fmt: skip
    assert got[1].detail == got[2].detail == "paused: stop now"


async def _publish_control(broker: Broker, control: ControlMessage) -> None:
    await broker.declare_topology()
    exchange = await broker.channel.get_exchange(broker.names.control)
    await exchange.publish(aio_pika.Message(encode(control)), routing_key="")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@pytest.mark.usefixtures("cli_env")
async def test_review_list_show_ack_and_requeue(
    broker: Broker, start_worker: WorkerStarter, capsys: pytest.CaptureFixture[str]
) -> None:
    await start_worker(subsystems=seed_subsystems(seed_cycle(), None))
    plan = plan_of("FLAG_FOR_REVIEW", "FLAG_FOR_REVIEW", "FLAG_FOR_REVIEW", plan_id="r")
    plan["actions"][0]["rationale"] = "p99 doubled after the last swap"  # type: ignore[index]
    await broker.publish_plan(plan)
    await wait_for_depth(broker, 3)
    # A redelivered plan can flag an action twice: the copy is shown once, acked together.
    review = await broker.channel.get_exchange(broker.names.review_exchange)
    first = plan["actions"][0]  # type: ignore[index]
    await review.publish(
        aio_pika.Message(json.dumps(first).encode(), message_id="r-0", headers={"plan_id": "r"}),
        routing_key="",
    )
    await wait_for_depth(broker, 4)

    code, out, _ = await run_cli(capsys, "review", "list")
    assert code == 0
    rows = [line for line in out.splitlines() if " r-" in line]
    assert len(rows) == 3, out
    assert "r-0 (x2)" in rows[0]
    assert "p99 doubled" in rows[0]
    assert "3 pending" in out
    assert await broker.depth(broker.names.review_queue) == 4  # looking took nothing away

    code, out, _ = await run_cli(capsys, "review", "show", "r-0")
    assert code == 0
    assert "rationale   p99 doubled after the last swap" in out
    code, out, _ = await run_cli(capsys, "review", "show", "r-0", "--json")
    shown = json.loads(out)
    assert shown["copies"] == 2
    assert shown["action"]["rationale"].startswith("p99 doubled")

    code, out, _ = await run_cli(capsys, "review", "ack", "r-0")
    assert code == 0
    assert "acked r-0 (2 copies)" in out
    await wait_for_depth(broker, 2)

    code, out, _ = await run_cli(capsys, "review", "requeue", "r-1")
    assert code == 0
    code, out, _ = await run_cli(capsys, "review", "list", "--json")
    assert [json.loads(line)["action_id"] for line in out.splitlines()] == ["r-2", "r-1"]

    code, out, _ = await run_cli(capsys, "review", "ack", "nope")
    assert code == 1
    assert "no pending review item with action id 'nope'" in out


async def wait_for_depth(broker: Broker, depth: int) -> None:
    for _ in range(200):
        if await broker.depth(broker.names.review_queue) == depth:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"review queue never reached {depth}")


@pytest.mark.usefixtures("cli_env")
async def test_publish_prints_the_records_and_refuses_a_bad_plan_with_its_path(
    broker: Broker, start_worker: WorkerStarter, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_worker(subsystems=seed_subsystems(seed_cycle(), None))
    good = tmp_path / "plan.json"
    good.write_text(json.dumps(plan_of("TUNE_THRESHOLD", "NO_OP", plan_id="pub")))
    code, out, err = await run_cli(capsys, "publish", str(good), "--timeout", "20")
    assert code == 0, err
    assert "published plan pub (2 actions)" in out
    assert out.count("SUCCESS") == 1
    assert out.count("SKIPPED") == 1

    bad = tmp_path / "bad.json"
    bad_action = {"action_id": "a", "module_name": "m", "action_kind": "DELETE_ALL"}
    bad.write_text(json.dumps({"plan_id": "x", "actions": [bad_action]}))
    code, out, err = await run_cli(capsys, "publish", str(bad))
    assert code == 2
    assert "$.actions[0].action_kind" in err


async def test_a_pause_still_reaches_a_worker_whose_control_consumer_the_broker_cancelled(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    """The broker cancels a stream consumer when the stream goes (or, in a cluster, its
    replica): the worker must consume it again, or it would never see a pause."""
    worker = await start_worker(subsystems=seed_subsystems(seed_cycle(), None))
    await broker.channel.queue_delete(broker.names.control)
    await asyncio.sleep(1.0)  # the worker retries while the stream is missing
    # Blind to pauses meanwhile: /readyz says so instead of 200.
    ready, why = worker.worker.readiness()
    assert not ready
    assert why == f"not reading {broker.names.control}: consuming it again"
    await broker.declare_topology()
    await _publish_control(broker, ControlMessage(
        command=ControlCommand.PAUSE, reason="after the cancel", issued_at=datetime.now(UTC)
    ))  # fmt: skip
    await wait_for(lambda: worker.worker.paused is not None, what="the pause", timeout=30)
    assert worker.worker.readiness()[0]  # ready again once it reads the stream


async def test_plans_still_reach_a_worker_whose_plans_consumer_the_broker_cancelled(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    """The plans queue deleted and declared again (by an operator, or a definitions import):
    the broker cancels the consumer, and aio-pika's robust queue would not consume again."""
    results = await broker.results_queue()
    worker = await start_worker()
    await broker.channel.queue_delete(broker.names.plans_queue)
    await wait_for(lambda: not worker.worker.readiness()[0], what="readiness to drop")
    assert (
        worker.worker.readiness()[1]
        == f"not consuming {broker.names.plans_queue}: consuming it again"
    )
    await broker.declare_topology()
    await wait_for(lambda: worker.worker.readiness()[0], what="the worker to consume again")
    await broker.publish_plan(no_op_plan("after-the-cancel"))
    assert len(await broker.records(results.name, expect=2)) == 2


async def test_the_queue_gauges_follow_the_broker(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    await broker.declare_topology()
    review = await broker.channel.get_exchange(broker.names.review_exchange)
    for n in range(2):
        await review.publish(aio_pika.Message(b"{}", message_id=f"g-{n}"), routing_key="")
    worker = await start_worker(subsystems=seed_subsystems(seed_cycle(), None), queue_poll_s=0.2)

    def gauge(name: str, queue: str) -> float:
        return worker.metric(f"asi_optimiser_queue_{name}", queue=queue)

    await wait_for(lambda: gauge("messages", "review") == 2, what="the review depth")
    await wait_for(lambda: gauge("consumers", "plans") == 1, what="the worker as consumer")
    assert gauge("messages", "invalid") == gauge("messages", "dead") == 0


async def test_a_worker_that_may_not_declare_refuses_a_namespace_not_declared(
    start_worker: WorkerStarter,
) -> None:
    with pytest.raises(TopologyMismatch, match="is not fully declared"):
        await start_worker(declare_topology=False)


@pytest.mark.usefixtures("cli_env")
async def test_breakers_list_shows_an_open_breaker_and_reset_closes_it_on_the_worker(
    broker: Broker, start_worker: WorkerStarter, capsys: pytest.CaptureFixture[str]
) -> None:
    orchestrator = seed_orchestrator(SwapOutcome.ROLLED_BACK, "health check failed")
    worker = await start_worker(
        subsystems=seed_subsystems(None, orchestrator),
        optimiser=OptimiserConfig(swap_budget=100, cool_down_s=0),
    )
    records = await broker.results_queue()
    swaps = [
        {"action_id": f"s{i}", "module_name": "memory.index", "action_kind": "HOT_SWAP_MODULE"}
        for i in range(4)
    ]
    for i, swap in enumerate(swaps):
        await broker.publish_plan({"plan_id": f"p{i}", "actions": [swap]})
    got = await records_of(broker, records, 4)
    assert [r.status for r in got] == [EnactmentStatus.FAILED] * 3 + [EnactmentStatus.SKIPPED]
    [item] = await broker.drain(broker.names.review_queue, expect=1)
    assert decode_action(item.body).parameters["guard"] == "breaker"

    code, out, err = await run_cli(capsys, "breakers", "list")
    assert code == 0, err
    assert "open       HOT_SWAP_MODULE  memory.index" in out
    code, out, err = await run_cli(capsys, "status")
    assert code == 0, err
    assert "breakers 1 open" in out
    code, out, err = await run_cli(capsys, "breakers", "list", "--json")
    assert json.loads(out)["module"] == "memory.index"
    assert (
        worker.metric(
            "asi_optimiser_breaker_open", module="memory.index", action_kind="HOT_SWAP_MODULE"
        )
        == 1.0
    )

    code, out, err = await run_cli(
        capsys, "breakers", "reset", "memory.index", "HOT_SWAP_MODULE", "--reason", "fixed"
    )
    assert code == 0, err
    await wait_for(
        lambda: (
            worker.metric(
                "asi_optimiser_breaker_open", module="memory.index", action_kind="HOT_SWAP_MODULE"
            )
            == 0.0
        ),
        what="the worker to close it",
    )
    await broker.publish_plan(
        {"plan_id": "after", "actions": [{**swaps[0], "action_id": "after-0"}]}
    )
    [after] = await records_of(broker, records, 1)
    assert after.status is EnactmentStatus.FAILED  # dispatched again
    code, out, _ = await run_cli(capsys, "breakers", "list")
    assert out.strip() == "no circuit breaker is open"


@pytest.mark.usefixtures("cli_env")
async def test_a_second_pause_is_refused_unless_forced_and_keeps_its_start(
    broker: Broker, start_worker: WorkerStarter, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = await start_worker(subsystems=seed_subsystems(seed_cycle(), None))
    code, out, err = await run_cli(capsys, "resume")
    assert (code, err) == (0, "")
    assert "is not paused: nothing to resume" in out

    assert (await run_cli(capsys, "pause", "--reason", "first", "--by", "alice"))[0] == 0
    await wait_for(lambda: worker.worker.paused is not None, what="the pause")
    since = worker.metric("asi_optimiser_paused_since_timestamp_seconds")

    code, out, err = await run_cli(capsys, "pause", "--reason", "second", "--by", "bob")
    assert code == 1
    assert "is already PAUSED since" in err
    assert "by alice: first" in err
    assert "`pause --force`" in err

    await asyncio.sleep(1.1)  # a replacement issued later must still report the first start
    code, out, err = await run_cli(capsys, "pause", "--force", "--reason", "second", "--by", "bob")
    assert code == 0, err
    await wait_for(
        lambda: worker.worker.paused is not None and worker.worker.paused.reason == "second",
        what="the replaced pause",
    )
    assert worker.metric("asi_optimiser_paused_since_timestamp_seconds") == since
    code, out, _ = await run_cli(capsys, "status")
    assert "by bob: second" in out
