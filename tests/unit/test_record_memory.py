"""The record memory keeps an offset per remembered action, and reads the record back for a
replay: the window, the limit, the hand-over from a whole record to its offset, and a stream
that no longer matches."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas import ActionKind, EnactmentRecord, ImprovementAction, Plan
from tests.support.factories import record
from worker.amqp import streams
from worker.core.clock import ManualClock
from worker.core.errors import OptimiserError
from worker.core.memory import RecordMemory
from worker.core.optimiser import AsyncSelfOptimiser
from worker.core.planstep import PlanStep


class Stream:
    """Records by offset, as the state stream holds them (a group's in one message); counts
    the reads."""

    def __init__(self) -> None:
        self.records: dict[int, list[EnactmentRecord]] = {}
        self.reads = 0

    async def fetch(self, offsets: list[int]) -> dict[int, list[EnactmentRecord]]:
        self.reads += 1
        return {offset: self.records[offset] for offset in offsets}


async def test_a_record_read_back_is_kept_as_its_offset_and_fetched_for_a_replay() -> None:
    clock = ManualClock()
    stream = Stream()
    memory = RecordMemory(window_s=60, limit=10, clock=clock, fetch=stream.fetch)
    own = record("a", clock.now())
    memory.remember(own)  # just published: kept whole
    assert "a" in memory
    assert await memory.recall(["a"]) == {"a": own}
    assert stream.reads == 0

    stream.records[7] = [own]
    memory.located("a", 7)  # the stream handed it back
    assert await memory.recall(["a"]) == {"a": own}
    assert stream.reads == 1

    learnt, grouped = record("b", clock.now()), record("c", clock.now())
    stream.records[8] = [learnt, grouped]
    memory.remember(learnt, 8)  # another worker's, from the stream: a group of two
    memory.remember(grouped, 8)
    assert await memory.recall(["a", "b", "c", "d"]) == {"a": own, "b": learnt, "c": grouped}
    assert stream.reads == 2  # one read for all three
    assert len(memory) == 3


async def test_the_first_record_is_kept_replays_and_copies_change_nothing() -> None:
    clock = ManualClock()
    stream = Stream()
    memory = RecordMemory(window_s=60, limit=10, clock=clock, fetch=stream.fetch)
    first = record("a", clock.now())
    stream.records[1] = [first]
    memory.remember(first, 1)
    clock.advance(5)
    memory.remember(record("a", clock.now()), 2)  # a later copy
    memory.remember(record("r", clock.now(), replay=True), 3)  # a replay of one unknown
    memory.located("a", 2)
    assert await memory.recall(["a"]) == {"a": first}
    assert "r" not in memory


async def test_records_leave_after_the_window_and_beyond_the_limit_oldest_first() -> None:
    clock = ManualClock()
    memory = RecordMemory(window_s=60, limit=3, clock=clock)
    for n in range(3):
        memory.remember(record(f"old-{n}", clock.now()), n)
    clock.advance(30)
    memory.remember(record("mid", clock.now()))  # whole: not read back yet
    assert [a for a in ("old-0", "old-1", "old-2", "mid") if a in memory] == [
        "old-1",
        "old-2",
        "mid",
    ]  # beyond the limit, the oldest left

    clock.advance(31)  # the old ones are 61 s old, "mid" 31 s
    memory.remember(record("new", clock.now()), 9)
    assert [a for a in ("old-1", "old-2", "mid", "new") if a in memory] == ["mid", "new"]

    clock.advance(30)  # "mid" (kept whole) 61 s old
    memory.remember(record("newer", clock.now()), 10)
    assert [a for a in ("mid", "new", "newer") if a in memory] == ["new", "newer"]


async def test_ids_loaded_from_checkpoints_keep_the_window_and_the_limit_oldest_first() -> None:
    clock = ManualClock()
    stream = Stream()
    memory = RecordMemory(window_s=60, limit=5, clock=clock, fetch=stream.fetch)
    ms = int(clock.now().timestamp() * 1000)
    memory.load(["a", "b"], [1, 2], [ms - 70_000, ms - 20_000])
    memory.load(["c"], [3], [ms - 5_000])  # a second checkpoint message
    assert [a for a in ("a", "b", "c", "x") if a in memory] == ["b", "c"]  # "a": too old
    assert len(memory) == 2
    stream.records[2] = [record("b", clock.now() - timedelta(seconds=20))]
    assert await memory.recall(["b", "x"]) == {"b": stream.records[2][0]}
    assert not memory.remember(record("b", clock.now()))  # known: not remembered again

    for n in range(4):
        assert memory.remember(record(f"n{n}", clock.now()), 10 + n)
    assert len(memory) == 5
    assert "b" not in memory  # beyond the limit, the oldest loaded one left first
    assert "c" in memory

    clock.advance(56)  # "c" is 61 s old now
    memory.remember(record("n9", clock.now()), 20)
    assert "c" not in memory
    assert len(memory) == 5


def test_many_loaded_ids_are_each_found_and_no_other() -> None:
    clock = ManualClock()
    memory = RecordMemory(window_s=3600, limit=1_000_000, clock=clock)
    ms = int(clock.now().timestamp() * 1000)
    ids = [f"plan-{n // 10}-{n % 10}" for n in range(100_000)]
    memory.load(ids, list(range(100_000)), [ms] * 100_000)
    assert all(action_id in memory for action_id in ids)
    assert not any(f"plan-{n}-x" in memory for n in range(10_000))
    assert len(memory) == 100_000


async def test_a_stream_that_holds_another_record_at_the_offset_is_an_error() -> None:
    clock = ManualClock()
    stream = Stream()
    memory = RecordMemory(window_s=60, limit=10, clock=clock, fetch=stream.fetch)
    memory.remember(record("a", clock.now()), 4)
    stream.records[4] = [record("someone-else", clock.now())]
    with pytest.raises(OptimiserError, match="holds no record of a at offset 4"):
        await memory.recall(["a"])


async def test_when_the_originals_cannot_be_read_back_nothing_of_the_plan_is_enacted() -> None:
    clock = ManualClock()

    async def unavailable(offsets: list[int]) -> dict[int, list[EnactmentRecord]]:
        raise streams.StreamUnavailable("the state stream did not answer")

    memory = RecordMemory(window_s=60, limit=10, clock=clock, fetch=unavailable)
    memory.remember(record("before", clock.now()), 3)
    optimiser = AsyncSelfOptimiser(clock=clock)
    step = PlanStep(optimiser, memory, clock=clock)
    plan = Plan(
        plan_id="again",
        actions=[
            ImprovementAction(action_id=i, module_name="m", action_kind=ActionKind.NO_OP)
            for i in ("before", "new")
        ],
    )
    with pytest.raises(streams.StreamUnavailable):
        await step.run(plan)
    assert "new" not in memory  # not enacted: the plan can come again whole
