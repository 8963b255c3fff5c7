"""The outbox's grouping: what plans in hand hand in goes out together, and nothing waits long.

The publisher here records each call instead of talking to a broker: what is under test is
when the outbox calls it and with what (the worker's suites run it against the real broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiormq

from worker.amqp.errors import PublishFailed
from worker.amqp.outbox import Outbox, Sent
from worker.amqp.publisher import Outgoing, Publisher


class Recording(Publisher):
    """Confirms everything; remembers each call's messages. ``routed`` False for routing key
    "nowhere". While ``held`` is clear, the confirms do not come."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.held = asyncio.Event()
        self.held.set()

    async def publish_bodies(self, messages: Sequence[Outgoing]) -> list[bool | PublishFailed]:
        self.calls.append([m.body.decode() for m in messages])
        await asyncio.sleep(0)
        await self.held.wait()
        return [m.routing_key != "nowhere" for m in messages]


def out(body: str, routing_key: str = "r") -> Outgoing:
    return Outgoing("x", routing_key, body.encode(), aiormq.spec.Basic.Properties())


def state_message(bodies: list[bytes]) -> list[Outgoing]:
    return [out("state:" + "+".join(b.decode() for b in bodies))]


def outbox_of(publisher: Publisher, *, most: int = 8, wait_s: float = 60.0) -> Outbox:
    return Outbox(publisher, state=state_message, most=most, wait_s=wait_s)


async def test_a_plan_alone_goes_out_at_once() -> None:
    publisher = Recording()
    outbox = outbox_of(publisher)
    async with asyncio.timeout(1):
        assert await outbox.publish([out("a"), out("b", "nowhere")]) == Sent([True, False], None)
    assert publisher.calls == [["a", "b"]]


async def test_plans_in_hand_go_out_in_one_write_each_told_its_own() -> None:
    publisher = Recording()
    outbox = outbox_of(publisher)
    release = asyncio.Event()

    async def plan(name: str) -> Sent:
        with outbox.holding():
            await release.wait()  # waiting for its turn, being enacted
        return await outbox.publish(
            [out(f"{name}1"), out(f"{name}2", "nowhere")], [b"s" + name.encode()]
        )

    async def first() -> Sent:
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
    # The state log's message of the group last, one for all of it.
    assert publisher.calls == [["p1", "q1", "q2", "r1", "r2", "state:sq+sr"]]
    assert outcomes == [Sent([True], None), Sent([True, False], True), Sent([True, False], True)]


async def test_records_wait_for_plans_in_hand_no_longer_than_wait_s() -> None:
    publisher = Recording()
    outbox = outbox_of(publisher, wait_s=0.01)
    with outbox.holding():  # a plan waiting for a subsystem, say
        async with asyncio.timeout(1):
            assert await outbox.publish([out("early")]) == Sent([True], None)
        assert publisher.calls == [["early"]]


async def test_at_most_most_hand_ins_wait_together() -> None:
    publisher = Recording()
    outbox = outbox_of(publisher, most=2)
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

    outbox = outbox_of(Broken())
    async with asyncio.timeout(1):
        sent = await outbox.publish([out("a"), out("b")], [b"s"])
    assert all(isinstance(o, PublishFailed) and "bug" in str(o) for o in sent.outcomes)
    assert isinstance(sent.state, PublishFailed)


async def test_the_state_log_gets_one_write_at_a_time_and_the_next_gathers_the_rest() -> None:
    publisher = Recording()
    outbox = outbox_of(publisher)
    publisher.held.clear()  # the first write's confirms are slow to come
    first = asyncio.create_task(outbox.publish([out("a")], [b"sa"]))
    await asyncio.sleep(0.01)
    later = [
        asyncio.create_task(outbox.publish([out(name)], [b"s" + name.encode()])) for name in "bc"
    ]
    await asyncio.sleep(0.01)
    # Their records go out at once; what they have for the state log waits for the first.
    assert publisher.calls == [["a", "state:sa"], ["b"], ["c"]]
    publisher.held.set()
    async with asyncio.timeout(1):
        sent = await asyncio.gather(first, *later)
    assert publisher.calls[3:] == [["state:sb+sc"]]
    assert sent == [Sent([True], True)] * 3


async def test_what_is_only_for_the_state_log_goes_at_once_when_nothing_is_in_flight() -> None:
    publisher = Recording()
    outbox = outbox_of(publisher)
    with outbox.holding():  # plans in hand do not hold the state log's writes up
        async with asyncio.timeout(1):
            assert await outbox.publish([], [b"lost"]) == Sent([], True)
    assert publisher.calls == [["state:lost"]]
