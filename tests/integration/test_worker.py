"""The RabbitMQ worker against a real broker, each test in its own namespace."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
import pytest
from prometheus_client import CollectorRegistry

from schemas import EnactmentStatus, decode_action, routing_key
from tests.support.broker import Broker
from tests.support.factories import EXAMPLE_PLAN, EXAMPLE_PLAN_PATH, no_op_plan, plan_of, wait_for
from tests.support.paths import ROOT
from tests.support.workers import WorkerStarter
from worker import OptimiserConfig, seed_subsystems
from worker.amqp.errors import BrokerRefused, BrokerUnavailable
from worker.amqp.worker import Worker
from worker.demo.simulated import SimulatedCycle, SimulatedOrchestrator
from worker.ops.publish import publish_plan, read_plan
from worker.ops.tail import tail_records
from worker.settings import WorkerSettings


async def test_a_plan_of_every_kind_gives_six_records_one_review_item_and_is_acked(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    cycle = SimulatedCycle()
    orchestrator = SimulatedOrchestrator(random.Random(0), failure_rate=0.0)
    running = await start_worker(subsystems=seed_subsystems(cycle, orchestrator))
    results = await broker.results_queue()

    await broker.publish_plan(EXAMPLE_PLAN)
    records = await broker.records(results.name, expect=6)

    assert sorted(routing_key(r) for r in records) == sorted(
        [
            "TUNE_THRESHOLD.SUCCESS.cognition.detector",
            "INCREASE_BUDGET.SUCCESS.planning.search",
            "REDUCE_LOAD.SUCCESS.perception.ingest",
            "HOT_SWAP_MODULE.SUCCESS.memory.index",
            "FLAG_FOR_REVIEW.SUCCESS.safety.filter",
            "NO_OP.SKIPPED.cognition.detector",
        ]
    )
    assert {r.plan_id for r in records} == {"plan-2026-11-23-0001"}
    assert cycle._detector_config.latency_p95_threshold_ms == pytest.approx(240.0)
    assert cycle._budget_map == {"planning.search": 1.5}
    assert orchestrator.versions == {"memory.index": "2.4.1"}
    [review] = await broker.drain(broker.names.review_queue, expect=1)
    assert review.message_id == "a-0005"
    assert review.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert decode_action(review.body).rationale.startswith("error rate doubled")

    await running.shutdown()  # closing the channel would requeue an unacked plan
    assert await broker.depth(broker.names.plans_queue) == 0
    assert running.metric("asi_optimiser_plans_consumed_total", outcome="acked") == 1


async def test_actions_beyond_the_cap_still_get_a_skipped_record(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    await start_worker(optimiser=OptimiserConfig(max_enactments_per_cycle=2))
    results = await broker.results_queue()

    await broker.publish_plan(no_op_plan("capped", actions=5))
    records = await broker.records(results.name, expect=5)

    assert [r.action.action_id for r in records] == [f"capped-{i}" for i in range(5)]
    assert [r.detail for r in records[2:]] == ["not enacted: max_enactments_per_cycle is 2"] * 3
    assert all(r.status is EnactmentStatus.SKIPPED for r in records)


MALFORMED: list[tuple[str, bytes, dict[str, str]]] = [
    ("not JSON", b"{plan", {}),
    ("empty body", b"", {}),
    ("an array", b"[]", {}),
    ("empty batch", b'{"plan_id": "p", "actions": []}', {}),
    ("unknown kind", json.dumps(no_op_plan("k")).replace("NO_OP", "EXPLODE").encode(), {}),
    ("non-UTF-8", b'{"plan_id": "\xff", "actions": []}', {}),
    ("NaN", b'{"plan_id": "p", "actions": NaN}', {}),
    ("wrong content type", json.dumps(no_op_plan("ct")).encode(), {"content_type": "text/plain"}),
    ("compressed", json.dumps(no_op_plan("gz")).encode(), {"content_encoding": "gzip"}),
    ("msgpack garbage", b"\xc1\xc1\xc1", {"content_type": "application/msgpack"}),
    ("too large", b'{"plan_id": "big", "actions": [' + b" " * 20_000 + b"]}", {}),
    ("deep nesting", b'{"plan_id": "deep", "junk": ' + b"[" * 4000 + b"]" * 4000 + b"}", {}),
    (
        "duplicate ids",
        json.dumps(
            {"plan_id": "d", "actions": [no_op_plan("d")["actions"][0]] * 2}  # type: ignore[index]
        ).encode(),
        {},
    ),
]


#: What AMQP can carry in a header, each kind once.
HEADERS: dict[str, Any] = {
    "ratio": 1.5,
    "count": 2**40,
    "flag": True,
    "nothing": None,
    "price": Decimal("12.34"),
    "when": datetime(2026, 11, 24, 12, 0, 5, tzinfo=UTC),
    "raw": bytearray(b"\x00\xffbytes"),
    "nested": {"a": [1, "two", [3.5, False]], "b": {"c": Decimal("-0.5")}},
}


async def test_malformed_plans_are_parked_and_valid_ones_keep_flowing(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    running = await start_worker(max_plan_bytes=10_000)
    results = await broker.results_queue()

    for index, (what, body, properties) in enumerate(MALFORMED):
        await broker.publish_plan(
            body,
            message_id=f"bad-{index}",
            headers={"what": what, **HEADERS},
            **properties,
        )
        await broker.publish_plan(no_op_plan(f"good-{index}"))

    records = await broker.records(results.name, expect=2 * len(MALFORMED))
    parked = await broker.drain(broker.names.invalid_queue, expect=len(MALFORMED))

    assert {r.plan_id for r in records} == {f"good-{i}" for i in range(len(MALFORMED))}
    assert len(parked) == len(MALFORMED)
    by_id = {p.headers["x-original-message-id"]: p for p in parked}
    for index, (what, body, properties) in enumerate(MALFORMED):
        message = by_id[f"bad-{index}"]
        assert message.body == body, what
        assert message.headers["what"] == what
        # Every header as it came (a float exact in 32 bits: pamqp sends floats so).
        assert {k: message.headers[k] for k in HEADERS} == HEADERS, what
        assert message.headers["x-error"], what
        assert message.content_type == properties.get("content_type", "application/json")
    assert "at `$.actions[1].action_kind`" not in by_id["bad-4"].headers["x-error"]
    assert "Invalid enum value 'EXPLODE' - at `$.actions[0].action_kind`" in str(
        by_id["bad-4"].headers["x-error"]
    )
    assert by_id["bad-10"].headers["x-error-kind"] == "too_large"
    assert by_id["bad-11"].headers["x-error-kind"] == "malformed"  # RecursionError, not a crash
    assert by_id["bad-7"].headers["x-error-kind"] == "content_type"
    assert running.worker.readiness() == (True, "consuming plans")
    assert running.metric("asi_optimiser_plans_parked_total", reason="invalid") >= 3


async def test_review_items_the_broker_refuses_are_counted_as_publish_failures(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    await broker.refuse_publishes(broker.names.review_exchange)
    results = await broker.results_queue()
    running = await start_worker(publish_timeout_s=2.0, outage_wait_s=2.0)

    await broker.publish_plan(plan_of("FLAG_FOR_REVIEW", plan_id="refused-review"))
    await wait_for(
        lambda: running.metric("asi_optimiser_publish_failures_total", target="review") >= 2,
        what="the review item's unconfirmed publishes counted",
    )
    [record] = await broker.records(results.name, expect=1)
    assert record.status is EnactmentStatus.FAILED
    assert running.metric("asi_optimiser_publish_failures_total", target="results") == 0


async def test_a_plan_whose_records_the_broker_refuses_is_not_acked(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    refusing = await broker.refuse_publishes(broker.names.results_exchange, "#")
    running = await start_worker(publish_timeout_s=2.0)

    await broker.publish_plan(no_op_plan("refused"))
    await wait_for(
        lambda: running.metric("asi_optimiser_publish_failures_total", target="results") >= 2,
        what="the broker to refuse the records twice (they are retried, the plan held)",
    )
    assert running.metric("asi_optimiser_plans_consumed_total", outcome="acked") == 0

    results = await broker.results_queue()
    await refusing.delete(if_unused=False, if_empty=False)
    records = await broker.records(results.name, expect=2)
    assert {r.plan_id for r in records} == {"refused"}
    await wait_for(
        lambda: running.metric("asi_optimiser_plans_consumed_total", outcome="acked") == 1,
        what="the plan acked once its records are confirmed",
    )
    assert running.metric("asi_optimiser_enact_calls_total") == 1  # never enacted twice


async def test_unroutable_records_are_an_error_and_a_metric_not_silence(
    broker: Broker, start_worker: WorkerStarter, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_worker()
    # No queue bound to N.results (no ReflectionCycle, no tail): the records reach nobody.
    await broker.publish_plan(no_op_plan("nobody-listens"))
    await wait_for(
        lambda: running.metric("asi_optimiser_records_unroutable_total") == 2,
        what="two unroutable records",
    )
    assert any(
        r.levelname == "ERROR" and "reached no queue" in r.getMessage() for r in caplog.records
    )
    await wait_for(
        lambda: running.metric("asi_optimiser_plans_consumed_total", outcome="acked") == 1,
        what="the plan acked: the state log holds its records",
    )


async def test_a_plan_is_held_while_the_state_log_is_unbound_and_acked_once_it_is_back(
    broker: Broker, start_worker: WorkerStarter, caplog: pytest.LogCaptureFixture
) -> None:
    # Acked without its records in the state log, a plan redelivered later (or a restart)
    # would have its actions enacted again: it stays in hand until the broker takes them.
    results = await broker.results_queue()
    running = await start_worker(publish_timeout_s=1.0)
    stream = await broker.channel.declare_queue(broker.names.results_log, passive=True)
    await stream.unbind(broker.names.notes, "")
    await broker.publish_plan(no_op_plan("unlogged"))
    await wait_for(
        lambda: running.metric("asi_optimiser_records_unroutable_total") >= 2,
        what="the state log's message returned",
    )
    assert running.metric("asi_optimiser_plans_consumed_total", outcome="acked") == 0
    assert any(
        r.levelname == "ERROR" and "state log's message" in r.getMessage() for r in caplog.records
    )
    await stream.bind(broker.names.notes, "")
    await wait_for(
        lambda: running.metric("asi_optimiser_plans_consumed_total", outcome="acked") == 1,
        what="the plan acked once the state log is bound again",
    )
    # Published to N.results once only: only the state log's message went again.
    assert len(await broker.records(results.name, expect=3, timeout=2)) == 2


async def test_health_readiness_and_metrics_are_served(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    running = await start_worker()
    base = f"http://127.0.0.1:{running.worker.metrics_port}"

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    assert await asyncio.to_thread(get, "/healthz") == (200, "ok\n")
    assert await asyncio.to_thread(get, "/readyz") == (200, "consuming plans\n")
    status, metrics = await asyncio.to_thread(get, "/metrics")
    assert status == 200
    assert "asi_optimiser_ready 1.0" in metrics
    assert "asi_optimiser_enact_calls_total 0.0" in metrics
    assert (await asyncio.to_thread(get, "/nope"))[0] == 404

    running.stop.set()
    await wait_for(lambda: not running.worker.readiness()[0], what="readiness to drop")
    await running.task


async def test_a_wrong_password_fails_at_once_with_a_clear_message(
    broker: Broker, start_worker: WorkerStarter, amqp_url: str
) -> None:
    bad = amqp_url.replace("guest:guest@", "guest:wrong@")
    if bad == amqp_url:
        pytest.skip("the test broker does not use guest:guest")
    with pytest.raises(BrokerRefused, match="refused the login: check the user name and password"):
        async with asyncio.timeout(10):  # no retrying for 120 s
            await start_worker(amqp_url=bad)


async def test_an_unknown_vhost_fails_at_once_with_a_clear_message(
    broker: Broker, start_worker: WorkerStarter, amqp_url: str
) -> None:
    with pytest.raises(BrokerRefused, match="the vhost may not exist"):
        async with asyncio.timeout(10):
            await start_worker(amqp_url=amqp_url.rstrip("/") + "/no-such-vhost")


async def test_a_broker_that_never_answers_gives_up_after_the_retry_window(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    with pytest.raises(BrokerUnavailable, match="no broker answered at amqp://guest:\\*\\*\\*@"):
        async with asyncio.timeout(20):
            await start_worker(
                amqp_url="amqp://guest:guest@127.0.0.1:1/", connect_retry_s=1.5, connect_timeout_s=1
            )


def test_the_run_command_exits_1_with_one_clear_line_when_the_broker_refuses(
    amqp_url: str,
) -> None:
    bad = amqp_url.replace("guest:guest@", "guest:not-the-password@")
    if bad == amqp_url:
        pytest.skip("the test broker does not use guest:guest")
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "run"],
        cwd=ROOT,
        env={**os.environ, "OPTIMISER_AMQP_URL": bad, "OPTIMISER_METRICS_PORT": "-1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "refused the login: check the user name and password" in done.stderr
    assert "not-the-password" not in done.stderr
    assert "Traceback" not in done.stderr


async def test_publish_prints_every_record_of_the_plan(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    running = await start_worker()
    plan, body = read_plan(str(EXAMPLE_PLAN_PATH))
    lines: list[str] = []

    all_came = await publish_plan(running.worker.settings, plan, body, wait_s=20, out=lines.append)

    assert all_came
    assert lines[0] == f"published plan {plan.plan_id} (6 actions) to {broker.names.plans_exchange}"
    assert lines[1].startswith("waiting up to 20s for 6 records")
    assert lines[2].split() == ["TIME", "STATUS", "KIND", "MODULE", "DETAIL"]
    assert len(lines) == 3 + 6
    assert any("FLAG_FOR_REVIEW" in line and "queued for review" in line for line in lines)


async def test_tail_follows_only_the_records_asked_for(
    broker: Broker, start_worker: WorkerStarter
) -> None:
    running = await start_worker()
    lines: list[str] = []
    stop = asyncio.Event()
    tail = asyncio.create_task(
        tail_records(
            running.worker.settings, kind="FLAG_FOR_REVIEW", status=None, module=None,
            as_json=True, out=lines.append, stop=stop,
        )
    )  # fmt: skip
    await asyncio.sleep(0.5)  # let it bind
    await broker.publish_plan(EXAMPLE_PLAN)
    await wait_for(lambda: len(lines) >= 1, what="the flagged record")
    await asyncio.sleep(0.3)  # nothing else may follow
    stop.set()
    await tail
    assert len(lines) == 1
    assert json.loads(lines[0])["action"]["action_id"] == "a-0005"


async def test_stop_during_start_up_ends_at_once_without_an_error(
    broker: Broker, amqp_url: str
) -> None:
    settings = WorkerSettings(
        amqp_url="amqp://guest:guest@127.0.0.1:1/", namespace=broker.names.namespace,
        metrics_port=-1, connect_retry_s=120.0, connect_timeout_s=1.0,
    )  # fmt: skip
    worker = Worker(settings, registry=CollectorRegistry())
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    async with asyncio.timeout(5):  # not the 120 s retry window
        await running
