"""The outbox's grouping: what plans in hand hand in goes out together, and nothing waits long.

The publisher here records each call instead of talking to a broker: what is under test is
when the outbox calls it and with what (the worker's suites run it against the real broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiormq

from worker.outbox import Outbox
from worker.publisher import Outgoing, Publisher, PublishFailed


class Recording(Publisher):
    """Confirms everything; remembers each call's messages. ``routed`` False for routing key
    "nowhere"."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def publish_bodies(self, messages: Sequence[Outgoing]) -> list[bool | PublishFailed]:
        self.calls.append([m.body.decode() for m in messages])
        await asyncio.sleep(0)
        return [m.routing_key != "nowhere" for m in messages]


def out(body: str, routing_key: str = "r") -> Outgoing:
    return Outgoing("x", routing_key, body.encode(), aiormq.spec.Basic.Properties())


async def test_a_plan_alone_goes_out_at_once() -> None:
    publisher = Recording()
    outbox = Outbox(publisher, most=8, wait_s=60.0)
    async with asyncio.timeout(1):
        assert await outbox.publish([out("a"), out("b", "nowhere")]) == [True, False]
    assert publisher.calls == [["a", "b"]]


async def test_plans_in_hand_go_out_in_one_write_each_told_its_own() -> None:
    publisher = Recording()
    outbox = Outbox(publisher, most=8, wait_s=60.0)
    release = asyncio.Event()

    async def plan(name: str) -> list[bool | PublishFailed]:
        with outbox.holding():
            await release.wait()  # waiting for its turn, being enacted
        return await outbox.publish([out(f"{name}1"), out(f"{name}2", "nowhere")])

    async def first() -> list[bool | PublishFailed]:
        with outbox.holding():
            pass
        return await outbox.publish([out("p1")])  # others are in hand: it waits for them

    later = [asyncio.create_task(plan(name)) for name in "qr"]
    await asyncio.sleep(0)  # delivered after it: in hand
    plans = [asyncio.create_task(first()), *later]
    await asyncio.sleep(0.01)
    assert publisher.calls == [], "nothing goes out while plans are in hand"
    release.set()
    async with asyncio.timeout(1):
        outcomes = await asyncio.gather(*plans)
    assert publisher.calls == [["p1", "q1", "q2", "r1", "r2"]]
    assert outcomes == [[True], [True, False], [True, False]]


async def test_records_wait_for_plans_in_hand_no_longer_than_wait_s() -> None:
    publisher = Recording()
    outbox = Outbox(publisher, most=8, wait_s=0.01)
    with outbox.holding():  # a plan waiting for a subsystem, say
        async with asyncio.timeout(1):
            assert await outbox.publish([out("early")]) == [True]
        assert publisher.calls == [["early"]]


async def test_at_most_most_hand_ins_wait_together() -> None:
    publisher = Recording()
    outbox = Outbox(publisher, most=2, wait_s=60.0)
    with outbox.holding():
        async with asyncio.timeout(1):
            sent = [asyncio.create_task(outbox.publish([out(str(i))])) for i in range(5)]
            await asyncio.sleep(0.01)
            assert publisher.calls == [["0", "1"], ["2", "3"]]
    async with asyncio.timeout(1):
        await asyncio.gather(*sent)  # the last one goes once nothing is in hand
    assert publisher.calls[-1] == ["4"]


async def test_a_publisher_that_raises_fails_each_message_instead_of_stranding_it() -> None:
    class Broken(Recording):
        async def publish_bodies(self, messages: Sequence[Outgoing]) -> list[bool | PublishFailed]:
            raise RuntimeError("bug")

    outbox = Outbox(Broken(), most=8, wait_s=60.0)
    async with asyncio.timeout(1):
        outcomes = await outbox.publish([out("a"), out("b")])
    assert all(isinstance(o, PublishFailed) and "bug" in str(o) for o in outcomes)
