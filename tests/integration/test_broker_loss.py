"""When the broker goes away under a person's command: one sentence, or (``tail``) two lines.

The broker is reached through a proxy that the tests cut: every connection closed, new ones
refused, as when a node stops. The commands run as people run them, in a subprocess, and
everything they print is counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from schemas import ActionKind, EnactmentRecord, EnactmentStatus, ImprovementAction, encode
from schemas import routing_key as record_key
from tests.support.broker import Broker
from tests.support.proxy import SilencingProxy
from worker.amqp.connection import one_shot
from worker.amqp.errors import BrokerLost
from worker.amqp.topology import queue_states
from worker.settings import WorkerSettings


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[SilencingProxy]:
    parts = urllib.parse.urlsplit(amqp_url)
    running = SilencingProxy((parts.hostname or "127.0.0.1", parts.port or 5672))
    await running.start()
    yield running
    while Command.started:  # a failed test leaves no command running
        process = Command.started.pop().process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
    await running.close()


class Command:
    """``self-optimiser ARGV`` in a subprocess, its stdout and stderr kept line by line."""

    started: list[Command] = []  # noqa: RUF012 - killed after each test, whatever happened

    def __init__(self, url: str, namespace: str, *argv: str) -> None:
        self.argv = [sys.executable, "-m", "worker.cli", *argv]
        self.env = {
            **os.environ,
            "OPTIMISER_AMQP_URL": url,
            "OPTIMISER_NAMESPACE": namespace,
            "PYTHONUNBUFFERED": "1",  # as a terminal shows it: line by line
        }
        self.out: list[str] = []
        self.err: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> Command:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        Command.started.append(self)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            self._readers.append(asyncio.create_task(self._read(stream, lines)))
        return self

    @staticmethod
    async def _read(stream: asyncio.StreamReader, lines: list[str]) -> None:
        while line := await stream.readline():
            lines.append(line.decode().rstrip("\n"))

    async def finish(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        try:
            async with asyncio.timeout(timeout):
                code = await self.process.wait()
                await asyncio.gather(*self._readers)
        except TimeoutError:
            shown = "\n".join(["stdout:", *self.out[-10:], "stderr:", *self.err[-20:]])
            raise AssertionError(
                f"{self.argv[3:]} did not end within {timeout}s\n{shown}"
            ) from None
        return code

    async def interrupt(self) -> int:
        assert self.process is not None
        self.process.send_signal(2)
        return await self.finish()


async def _until(condition: object, what: str, timeout: float = 30.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:g}s")
        await asyncio.sleep(0.1)


def _record(action_id: str) -> EnactmentRecord:
    return EnactmentRecord(
        plan_id="p",
        action=ImprovementAction(
            action_id=action_id, module_name=f"m.{action_id}", action_kind=ActionKind.REDUCE_LOAD
        ),
        status=EnactmentStatus.SUCCESS,
        detail="load-shed signal sent",
        attempted_at=datetime.now(UTC),
    )


async def _publish_record(broker: Broker, action_id: str) -> None:
    record = _record(action_id)
    exchange = await broker.channel.get_exchange(broker.names.results_exchange)
    await exchange.publish(aio_pika.Message(encode(record)), routing_key=record_key(record))


async def test_tail_says_once_it_lost_the_broker_and_once_it_is_back_with_what_was_missed(
    broker: Broker, amqp_url: str, proxy: SilencingProxy
) -> None:
    await broker.declare_topology()
    tail = await Command(proxy.url_for(amqp_url), broker.names.namespace, "tail").start()

    async def shown(action_id: str) -> None:
        async def seen() -> bool:
            return any(f" m.{action_id} " in line for line in tail.out)

        deadline = time.monotonic() + 30
        while not await seen():  # published until tail's queue is bound and shows it
            assert time.monotonic() < deadline, f"tail never showed {action_id}: {tail.err}"
            await _publish_record(broker, action_id)
            await asyncio.sleep(0.3)

    await shown("before")
    proxy.cut()
    await _until(lambda: tail.err, "line about the lost broker")
    await _publish_record(broker, "missed")  # nobody's queue: tail cannot see it
    await asyncio.sleep(4.0)  # a few of the reconnect rounds tail keeps to itself
    proxy.restore()
    await _until(lambda: len(tail.err) >= 2, "line saying the broker is back")
    await shown("after")
    assert await tail.interrupt() in (0, 130)

    print("\n".join(tail.err))
    lost, back = tail.err
    assert lost.startswith("lost the broker at amqp://guest:***@127.0.0.1:"), tail.err
    assert lost.endswith("records published until it is back are missed"), tail.err
    assert " is back after " in back, tail.err
    assert back.endswith("were missed"), tail.err
    assert not any(" m.missed " in line for line in tail.out)


async def test_publish_that_loses_the_broker_while_waiting_says_one_sentence_and_exits_1(
    broker: Broker, amqp_url: str, proxy: SilencingProxy, tmp_path: Path
) -> None:
    await broker.declare_topology()
    plan = json.dumps(
        {
            "plan_id": "gone",
            "actions": [{"action_id": "g-1", "module_name": "m", "action_kind": "NO_OP"}],
        }
    )
    path = tmp_path / "plan.json"
    path.write_text(plan)
    publish = Command(proxy.url_for(amqp_url), broker.names.namespace, "publish", str(path))
    publish.argv += ["--timeout", "60"]
    await publish.start()
    await _until(lambda: any(line.startswith("waiting up to") for line in publish.out), "wait")
    proxy.cut()
    assert await publish.finish() == 1
    assert len(publish.err) == 1, publish.err
    [sentence] = publish.err
    assert sentence.startswith("self-optimiser: error: lost the broker at amqp://guest:***@")
    assert "plan gone was published (the broker confirmed it)" in sentence
    assert await broker.depth(broker.names.plans_queue) == 1


async def test_a_one_shot_command_that_loses_the_broker_stops_at_once_with_broker_lost(
    broker: Broker, amqp_url: str, proxy: SilencingProxy
) -> None:
    # What status, review, breakers, pause and resume run on.
    await broker.declare_topology()
    settings = WorkerSettings(amqp_url=proxy.url_for(amqp_url), namespace=broker.names.namespace)

    async def command() -> None:
        async with one_shot(settings, "test") as connection:
            await queue_states(connection, broker.names.watched)  # it works, then:
            proxy.cut()
            while True:  # a command that goes on using the connection
                await queue_states(connection, broker.names.watched)
                await asyncio.sleep(0.05)

    started = time.monotonic()
    with pytest.raises(BrokerLost, match=r"^lost the broker at amqp://guest:\*\*\*@127\.0\.0\.1"):
        await command()
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_tail_stops_on_ctrl_c_or_sigterm_closes_its_queue_and_exits_0(
    broker: Broker, amqp_url: str, signum: signal.Signals
) -> None:
    await broker.declare_topology()
    tail = await Command(amqp_url, broker.names.namespace, "tail").start()
    await _until(lambda: tail.out, "the header tail prints once it follows")
    assert tail.process is not None
    tail.process.send_signal(signum)
    assert await tail.finish() == 0, tail.err
    assert tail.err == []  # no traceback, no library lines
