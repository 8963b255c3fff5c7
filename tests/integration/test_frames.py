"""Bytes that are not UTF-8 in a delivery's short strings: the frame is read, the plan parked
alone, the healthy plans around it enacted once; in a stream, skipped (``worker.amqp.frames``)."""

from __future__ import annotations

import json
import logging

import pytest

from schemas import EnactmentStatus
from tests.support.broker import Broker
from tests.support.factories import plan_of
from tests.support.rawamqp import RawPublisher
from tests.support.workers import WorkerStarter

BAD = b"\xff\xfe"  # never UTF-8


def _plan(plan_id: str) -> bytes:
    return json.dumps(plan_of("NO_OP", plan_id=plan_id)).encode()


async def test_a_plan_the_client_cannot_read_is_parked_alone_and_its_neighbours_enacted_once(
    broker: Broker, start_worker: WorkerStarter, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker")
    results = await broker.results_queue()
    running = await start_worker(prefetch=32)
    raw = await RawPublisher.open(amqp_url)
    exchange = broker.names.plans_exchange
    json_type = {"content_type": "application/json"}
    try:
        # All published before the worker has taken the first: they arrive prefetched together.
        await raw.publish(exchange, "", _plan("ok1"), replace={}, **json_type)
        await raw.publish(exchange, "key-XX", _plan("rk"), replace={b"key-XX": b"key-" + BAD})
        await raw.publish(
            exchange, "", _plan("mid"), replace={b"id-XX": b"id-" + BAD},
            message_id="id-XX", **json_type,
        )  # fmt: skip
        await raw.publish(exchange, "", _plan("ok2"), replace={}, **json_type)
        await raw.publish(
            exchange, "", _plan("ct"), replace={b"application/jsoXX": b"application/jso" + BAD},
            content_type="application/jsoXX",
        )  # fmt: skip
        await raw.publish(
            exchange, "", _plan("hdr"), replace={b"hdrXX": b"hdr" + BAD},
            headers={"hdrXX": "v"}, **json_type,
        )  # fmt: skip
        await raw.publish(
            exchange, "", _plan("nested"), replace={b"inXX": b"in" + BAD},
            headers={"outer": {"inXX": 1}}, **json_type,
        )  # fmt: skip
        await raw.publish(exchange, "", _plan("ok3"), replace={}, **json_type)
    finally:
        await raw.close()

    records = await broker.records(results.name, expect=4, timeout=10.0)
    parked = await broker.drain(broker.names.invalid_queue, expect=6, timeout=10.0)

    assert sorted(r.plan_id for r in records) == ["ok1", "ok2", "ok3"]
    assert all(r.status is EnactmentStatus.SKIPPED and not r.replay for r in records)
    kinds = {(m.headers or {}).get("x-error-kind") for m in parked}
    assert len(parked) == 5
    assert kinds == {"unreadable_properties"}
    errors = sorted(str((m.headers or {})["x-error"]) for m in parked)
    assert any("routing key 'key-\\\\xff\\\\xfe'" in e for e in errors), errors
    assert any("property message_id" in e for e in errors), errors
    assert any("property content_type" in e for e in errors), errors
    assert any("header name 'hdr\\\\xff\\\\xfe'" in e for e in errors), errors
    assert any("header outer name 'in\\\\xff\\\\xfe'" in e for e in errors), errors
    keys = [(m.headers or {}).get("x-original-routing-key-bytes") for m in parked]
    assert b"key-" + BAD in [bytes(k) for k in keys if isinstance(k, bytes | bytearray)]
    assert await broker.depth(broker.names.dead_queue) == 0
    assert running.metric("asi_optimiser_plans_parked_total", reason="unreadable_properties") == 5
    assert not [m for m in caplog.messages if "lost the broker" in m], "the connection held"
    assert all(not m.redelivered for m in parked)


async def test_a_message_nobody_can_read_in_the_state_streams_is_skipped_and_restore_goes_on(
    broker: Broker, start_worker: WorkerStarter, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="worker")
    await broker.declare_topology()
    raw = await RawPublisher.open(amqp_url)
    try:
        await raw.publish(
            broker.names.notes, "NO_OP.SKIPPED.mXX", b"{}",
            replace={b"mXX": b"m" + BAD}, message_id="x",
        )  # fmt: skip
        await raw.publish(
            broker.names.control, "", b"{}", replace={b"ctlXX": b"ctl" + BAD}, message_id="ctlXX"
        )
    finally:
        await raw.close()

    running = await start_worker()  # ready: both streams were read to their end

    assert running.worker.readiness()[0]
    skipped = [m for m in caplog.messages if "not one of ours, skipped" in m]
    assert len(skipped) == 2, caplog.messages
