"""A cluster is what the worker connects to: several addresses, tried in turn, on the first
connect and on every reconnect, one log line per round in which none answered."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import pytest

from tests.support.proxy import SilencingProxy
from worker.amqp.connection import connect
from worker.settings import WorkerSettings

DEAD = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1


async def test_a_dead_first_address_is_passed_over(amqp_url: str) -> None:
    settings = WorkerSettings(amqp_url=f"{DEAD},{amqp_url}", connect_timeout_s=5.0)
    connection = await connect(settings, "test")
    try:
        assert connection.connected.is_set()
        assert urlsplit(str(connection.url)).port == (urlsplit(amqp_url).port or 5672)
    finally:
        await connection.close()


async def test_a_lost_node_is_replaced_by_the_next_address_with_one_line_a_round(
    amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.amqp.connection")
    proxy, via_proxy = await SilencingProxy.in_front_of(amqp_url)
    settings = WorkerSettings(
        amqp_url=f"{via_proxy},{DEAD},{amqp_url}", heartbeat_s=1, connect_timeout_s=5.0
    )
    connection = await connect(settings, "test")
    try:
        assert urlsplit(str(connection.url)).port == proxy.port  # the first address first
        proxy.blackout()  # that node is gone: silent, and refusing
        async with asyncio.timeout(30):
            while not (
                connection.connected.is_set()
                and urlsplit(str(connection.url)).port == (urlsplit(amqp_url).port or 5672)
            ):
                await asyncio.sleep(0.1)
        # Port 1 refused on the way: that is one address, not a failed round.
        assert [r for r in caplog.records if r.name == "worker.amqp.connection"] == []
    finally:
        await connection.close()
        await proxy.close()


async def test_a_round_in_which_no_address_answers_is_one_line(
    amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.amqp.connection")
    proxy, via_proxy = await SilencingProxy.in_front_of(amqp_url)
    settings = WorkerSettings(amqp_url=f"{via_proxy},{DEAD}", heartbeat_s=1)
    connection = await connect(settings, "test")
    try:
        proxy.blackout()
        await asyncio.sleep(8.0)
        rounds = [r.getMessage() for r in caplog.records if r.name == "worker.amqp.connection"]
        # About 5 s of outage after the heartbeat notices, backing off from 0.5 s: several
        # rounds, one line for them (the next after a minute), naming both addresses.
        assert len(rounds) == 1, rounds
        assert all(
            m.startswith("no broker answered at amqp://guest:***@127.0.0.1:") for m in rounds
        )
        assert all(", amqp://guest:***@127.0.0.1:1/" in m for m in rounds)
        proxy.restore()
        async with asyncio.timeout(60):
            await connection.connected.wait()
    finally:
        await connection.close()
        await proxy.close()
