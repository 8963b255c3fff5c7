"""The delivery table (docs/worker-behaviour.md), row by row, on a fake delivery: what becomes of
each delivery of ``N.plans``, decided by the real plan handler and settled in one place. The same
rows run against RabbitMQ in the integration suites; here each one runs in milliseconds and can
break one rule at a time."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

import pytest

from schemas import ParkReason
from schemas.commands import SubsystemCommand
from tests.support.delivery import FakeDelivery, Harness
from tests.support.factories import plan_of as plan
from worker import SubsystemResult, Subsystems
from worker.amqp import plans
from worker.amqp.outcome import Fate


@dataclass
class Load:
    """A load shedder that counts each application, and can close the delivery's channel as it
    applies one (the plan lost mid-way)."""

    applied: Counter[str] = field(default_factory=Counter)
    closes: FakeDelivery | None = None

    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        await asyncio.sleep(0)
        self.applied[command.action_id] += 1
        if self.closes is not None:
            self.closes.channel.is_closed = True
        return SubsystemResult(True, "shed")


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    # A requeue's delay is the handler's to decide; these tests need not wait it out.
    monkeypatch.setattr(plans, "RETRY_AFTER_S", 0.01)


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "worker.amqp.plans"]


# --- row 1: unreadable -> parked, then acked ----------------------------------------------------


@pytest.mark.parametrize(
    ("delivery", "kind", "max_bytes"),
    [
        (FakeDelivery(b'{"plan_id": "p", "actions": []}' + b" " * 100), ParkReason.TOO_LARGE, 50),
        (FakeDelivery.of(plan("NO_OP"), content_type="text/plain"), ParkReason.CONTENT_TYPE, None),
        (
            FakeDelivery.of(
                plan("NO_OP"), content_type="application/json", content_encoding="gzip"
            ),
            ParkReason.CONTENT_ENCODING,
            None,
        ),
        (FakeDelivery(b"{not json"), ParkReason.MALFORMED, None),
        (FakeDelivery(b'{"plan_id": "p", "actions": []}'), ParkReason.INVALID, None),
        (FakeDelivery(b"{}", routing_key="key-\udcff"), ParkReason.UNREADABLE_PROPERTIES, None),
    ],
    ids=str,
)
async def test_an_unreadable_delivery_is_parked_with_its_reason_then_acked(
    delivery: FakeDelivery,
    kind: ParkReason,
    max_bytes: int | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.amqp.plans")
    harness = Harness(max_plan_bytes=max_bytes or 1_048_576)
    await harness.handler.handle(delivery)  # type: ignore[arg-type]

    [parked] = harness.publisher.to(harness.names.invalid_exchange)
    assert parked.body == delivery.body
    assert parked.properties.headers["x-error-kind"] == kind.value
    assert parked.properties.headers["x-error"]
    assert delivery.channel.acked == [delivery.delivery_tag]
    assert harness.consumed("parked") == 1
    [line] = _lines(caplog)
    assert f"parked in {harness.names.invalid_queue} ({kind})" in line.getMessage()


async def test_a_delivery_that_cannot_be_parked_returns_to_the_queue_after_a_while() -> None:
    harness = Harness()
    harness.publisher.unbound.add(harness.names.invalid_exchange)
    delivery = FakeDelivery(b"{not json")
    await harness.handler.handle(delivery)  # type: ignore[arg-type]

    assert delivery.channel.nacked == [delivery.delivery_tag]
    assert delivery.channel.acked == []
    assert harness.consumed("requeued") == 1
    assert harness.consumed("parked") == 0


# --- rows 2-5, 7: fenced, enacted once, records confirmed, acked --------------------------------


async def test_a_readable_plan_is_enacted_its_records_published_and_then_acked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.amqp.plans")
    load = Load()
    harness = Harness(subsystems=Subsystems(load=load))
    delivery = FakeDelivery.of(plan("REDUCE_LOAD", "NO_OP"))
    await harness.handler.handle(delivery)  # type: ignore[arg-type]

    records = harness.records()
    assert [(r["action"]["action_id"], r["status"]) for r in records] == [
        ("p-0", "SUCCESS"), ("p-1", "SKIPPED"),
    ]  # fmt: skip
    routing = [m.routing_key for m in harness.publisher.to(harness.names.results_exchange)]
    assert routing == ["REDUCE_LOAD.SUCCESS.m0", "NO_OP.SKIPPED.m1"]
    assert len(harness.publisher.to(harness.names.notes)) == 1  # the state log: one message
    assert load.applied == Counter({"p-0": 1})
    assert delivery.channel.acked == [delivery.delivery_tag]
    assert harness.consumed("acked") == 1
    [line] = _lines(caplog)
    assert line.getMessage().startswith("plan p: 2 actions in ")
    assert "SUCCESS 1, SKIPPED 1" in line.getMessage()


async def test_a_plan_delivered_again_is_not_enacted_again_its_records_are_replayed() -> None:
    load = Load()
    harness = Harness(subsystems=Subsystems(load=load))
    await harness.handler.handle(FakeDelivery.of(plan("REDUCE_LOAD")))  # type: ignore[arg-type]
    again = FakeDelivery.of(plan("REDUCE_LOAD"))
    again.redelivered = True
    await harness.handler.handle(again)  # type: ignore[arg-type]

    first, second = harness.records()
    assert second["replay"] is True
    assert second["attempted_at"] == first["attempted_at"]
    assert load.applied == Counter({"p-0": 1})
    assert again.channel.acked == [again.delivery_tag]


async def test_a_fence_that_fails_enacts_nothing_and_is_tried_again_while_the_plan_is_ours() -> (
    None
):
    load = Load()
    harness = Harness(subsystems=Subsystems(load=load), fence_fails=2)
    delivery = FakeDelivery.of(plan("REDUCE_LOAD"))
    await harness.handler.handle(delivery)  # type: ignore[arg-type]

    assert harness.fence_fails == 0  # tried three times
    assert load.applied == Counter({"p-0": 1})
    assert delivery.channel.acked == [delivery.delivery_tag]


async def test_a_plan_whose_delivery_is_lost_during_its_fence_is_not_enacted_nor_settled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.amqp.plans")
    load = Load()
    harness = Harness(subsystems=Subsystems(load=load), fence_fails=1)
    delivery = FakeDelivery.of(plan("REDUCE_LOAD"))
    delivery.channel.is_closed = True
    await harness.handler.handle(delivery)  # type: ignore[arg-type]

    assert load.applied == Counter()
    assert harness.records() == []
    assert delivery.channel.acked == delivery.channel.nacked == []
    assert harness.consumed("lost") == 1
    [line] = _lines(caplog)
    assert line.getMessage() == "plan p: delivery lost while reading the state; not enacted"


async def test_a_worker_stopping_returns_the_plans_it_has_not_enacted_to_the_queue() -> None:
    load = Load()
    harness = Harness(subsystems=Subsystems(load=load), stopping=True)
    delivery = FakeDelivery.of(plan("REDUCE_LOAD"))
    await harness.handler.handle(delivery)  # type: ignore[arg-type]

    assert load.applied == Counter()
    assert delivery.channel.nacked == [delivery.delivery_tag]
    assert harness.consumed("requeued") == 1


# --- row 4: the delivery lost mid-way: no further action, their records not here ----------------


async def test_once_the_delivery_is_lost_no_further_action_is_enacted_and_the_ack_is_lost() -> None:
    load = Load()
    harness = Harness(subsystems=Subsystems(load=load))
    delivery = FakeDelivery.of(plan("REDUCE_LOAD", "REDUCE_LOAD"))
    load.closes = delivery
    await harness.handler.handle(delivery)  # type: ignore[arg-type]

    assert load.applied == Counter({"p-0": 1})  # the second was not looked at
    assert [r["action"]["action_id"] for r in harness.records()] == ["p-0"]
    assert delivery.channel.acked == []
    assert harness.consumed("requeued") == 1  # the broker gives it to whoever consumes now


# --- row 6: FLAG_FOR_REVIEW ---------------------------------------------------------------------


async def test_a_review_item_is_queued_and_its_record_says_so() -> None:
    harness = Harness()
    delivery = FakeDelivery.of(plan("FLAG_FOR_REVIEW"))
    await harness.handler.handle(delivery)  # type: ignore[arg-type]

    assert harness.review.queue.qsize() == 1
    [record] = harness.records()
    assert (record["status"], record["detail"]) == ("SUCCESS", "queued for review")


# --- row 8: a record the broker did not confirm: published again, nothing enacted again ---------


async def test_records_the_broker_did_not_confirm_are_published_again_and_not_enacted_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("worker.amqp.records.RETRY_FIRST_S", 0.01)
    load = Load()
    harness = Harness(subsystems=Subsystems(load=load))
    harness.publisher.fail = 2
    delivery = FakeDelivery.of(plan("REDUCE_LOAD"))
    await harness.handler.handle(delivery)  # type: ignore[arg-type]

    assert load.applied == Counter({"p-0": 1})
    assert [r["action"]["action_id"] for r in harness.records()] == ["p-0"]
    assert delivery.channel.acked == [delivery.delivery_tag]
    assert harness.metrics.publish_failures.labels("results")._value.get() == 2


# --- what no row foresaw: a bug, a closed channel ---------------------------------------------


async def test_a_bug_in_a_step_returns_the_delivery_to_the_queue_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker.amqp.plans")
    harness = Harness()

    def broken(*_: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(plans, "read_plan", broken)
    delivery = FakeDelivery.of(plan("NO_OP"))
    await harness.handler.handle(delivery)  # type: ignore[arg-type]

    assert delivery.channel.nacked == [delivery.delivery_tag]
    assert harness.consumed("requeued") == 1
    [line] = _lines(caplog)
    assert line.levelno == logging.ERROR
    assert line.exc_info is not None
    assert line.exc_info[0] is ZeroDivisionError


async def test_an_ack_that_fails_counts_the_plan_requeued_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.amqp.plans")
    harness = Harness()
    delivery = FakeDelivery.of(plan("NO_OP"))
    delivery.channel.refuse = True
    await harness.handler.handle(delivery)  # type: ignore[arg-type]

    assert harness.consumed("acked") == 0
    assert harness.consumed("requeued") == 1
    assert "ack lost with the channel" in _lines(caplog)[-1].getMessage()


# --- the settle point itself --------------------------------------------------------------------


def test_every_fate_has_its_series_from_the_start() -> None:
    harness = Harness()
    assert {f.value for f in Fate} == {"acked", "parked", "requeued", "lost"}
    assert all(harness.consumed(fate) == 0 for fate in Fate)
    samples = {
        s.labels["outcome"]
        for metric in harness.registry.collect()
        if metric.name == "asi_optimiser_plans_consumed"
        for s in metric.samples
        if s.name.endswith("_total")
    }
    assert samples == set(Fate)


async def test_every_delivery_gets_exactly_one_line_and_one_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="worker.amqp.plans")
    harness = Harness(subsystems=Subsystems(load=Load()))
    deliveries = [
        FakeDelivery.of(plan("REDUCE_LOAD", plan_id="a")),
        FakeDelivery(b"[]"),
        FakeDelivery.of(plan("NO_OP", plan_id="b")),
    ]
    for delivery in deliveries:
        harness.handler.deliver(delivery)  # type: ignore[arg-type]
    await harness.handler.drain(5.0)

    assert len(_lines(caplog)) == len(deliveries)
    assert sum(harness.consumed(fate) for fate in Fate) == len(deliveries)
    assert harness.handler.in_hand == 0
