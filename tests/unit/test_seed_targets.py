"""The design card's twelve test targets, under exactly its names."""

from __future__ import annotations

import asyncio
from unittest.mock import Mock

import pytest

from schemas import ActionKind, EnactmentStatus, ImprovementAction
from schemas.commands import SubsystemCommand
from tests.support.factories import action
from tests.support.subsystems import seed_cycle
from worker import (
    AsyncSelfOptimiser,
    DetectorConfig,
    ManualClock,
    OptimiserConfig,
    SubsystemResult,
    Subsystems,
)

K = ActionKind
S = EnactmentStatus


async def test_flag_for_review_always_success(clock: ManualClock) -> None:
    # "Always": with no cycle and no orchestrator at all, for every module.
    alerts: asyncio.Queue[ImprovementAction] = asyncio.Queue()
    optimiser = AsyncSelfOptimiser(alert_queue=alerts, clock=clock)
    flags = [action(K.FLAG_FOR_REVIEW, module) for module in ("safety.filter", "memory", "io")]

    records = await optimiser.enact(flags)

    assert [r.status for r in records] == [S.SUCCESS] * 3
    assert all(r.detail == "queued for review" for r in records)
    assert [alerts.get_nowait() for _ in flags] == flags
    assert alerts.empty()


async def test_no_op_returns_skipped(clock: ManualClock, cycle: Mock, orchestrator: Mock) -> None:
    optimiser = AsyncSelfOptimiser(orchestrator, cycle, clock=clock)
    no_op = action(K.NO_OP)

    [record] = await optimiser.enact([no_op])

    assert record.status is S.SKIPPED
    assert record.detail == "no-op"
    assert record.action == no_op
    assert await optimiser.stats() == {"skipped": 1, "enact_calls": 1}


async def test_dry_run_skips_all(clock: ManualClock, cycle: Mock, orchestrator: Mock) -> None:
    alerts: asyncio.Queue[ImprovementAction] = asyncio.Queue()
    optimiser = AsyncSelfOptimiser(
        orchestrator, cycle, alerts, OptimiserConfig(dry_run=True), clock=clock
    )
    detector_before = cycle._detector_config
    actions = [action(kind, f"m.{kind.value.lower()}") for kind in K]

    records = await optimiser.enact(actions)

    assert len(records) == len(actions)
    assert [r.status for r in records] == [S.SKIPPED] * len(actions)
    assert records[0].detail == "dry-run: would enact TUNE_THRESHOLD"
    assert cycle._detector_config is detector_before
    assert cycle._budget_map == {}
    cycle._load_shedder.shed.assert_not_called()
    orchestrator.orchestrate_swap.assert_not_called()
    assert alerts.empty()


async def test_rate_limit_gate(clock: ManualClock, cycle: Mock) -> None:
    optimiser = AsyncSelfOptimiser(
        cognitive_cycle=cycle, config=OptimiserConfig(cool_down_s=60), clock=clock
    )

    first, second = await optimiser.enact(
        [action(K.TUNE_THRESHOLD, "det"), action(K.TUNE_THRESHOLD, "det")]
    )
    clock.advance(59.9)
    [third] = await optimiser.enact([action(K.TUNE_THRESHOLD, "det")])
    # The cycle has one detector threshold: another module name is the same setting.
    [other_module] = await optimiser.enact([action(K.TUNE_THRESHOLD, "other")])
    [other_budget] = await optimiser.enact([action(K.INCREASE_BUDGET, "other")])
    [other_kind] = await optimiser.enact([action(K.REDUCE_LOAD, "det")])

    assert first.status is S.SUCCESS
    assert second.status is S.RATE_LIMITED
    assert second.detail.startswith("cool-down active (60")
    assert third.status is S.RATE_LIMITED
    assert other_module.status is S.RATE_LIMITED
    assert other_budget.status is S.SUCCESS
    assert other_kind.status is S.SUCCESS
    assert (await optimiser.stats())["rate_limited"] == 3


async def test_rate_limit_expires(clock: ManualClock, cycle: Mock) -> None:
    optimiser = AsyncSelfOptimiser(
        cognitive_cycle=cycle, config=OptimiserConfig(cool_down_s=60), clock=clock
    )
    [first] = await optimiser.enact([action(K.INCREASE_BUDGET, "search")])

    clock.advance(60)
    [second] = await optimiser.enact([action(K.INCREASE_BUDGET, "search")])

    assert first.status is S.SUCCESS
    assert second.status is S.SUCCESS
    # x1.5 twice within 10 minutes would be x2.25: the bound (x2 per 10 min) trims the second.
    assert cycle._budget_map["search"] == pytest.approx(1.0 * 2.0)
    assert "trimmed by bound" in second.detail


async def test_hot_swap_cap(clock: ManualClock, orchestrator: Mock) -> None:
    optimiser = AsyncSelfOptimiser(
        orchestrator, config=OptimiserConfig(max_hot_swap_per_cycle=1), clock=clock
    )

    first, second = await optimiser.enact(
        [action(K.HOT_SWAP_MODULE, "memory"), action(K.HOT_SWAP_MODULE, "vision")]
    )

    assert first.status is S.SUCCESS
    assert second.status is S.SKIPPED
    assert second.detail == "hot-swap cap reached for this cycle"
    orchestrator.orchestrate_swap.assert_awaited_once()
    # The cap is per call: the next call may swap again.
    [third] = await optimiser.enact([action(K.HOT_SWAP_MODULE, "vision")])
    assert third.status is S.SUCCESS


async def test_max_enactments_cap(clock: ManualClock) -> None:
    optimiser = AsyncSelfOptimiser(config=OptimiserConfig(max_enactments_per_cycle=2), clock=clock)
    actions = [action(K.NO_OP, f"m{i}") for i in range(5)]

    records = await optimiser.enact(actions)

    assert len(records) == 2
    assert [r.action for r in records] == actions[:2]


async def test_orchestrator_success(clock: ManualClock, orchestrator: Mock) -> None:
    optimiser = AsyncSelfOptimiser(orchestrator, clock=clock)
    swap = action(K.HOT_SWAP_MODULE, "memory.index", target_version="2.4.1", artifact_ref="a/b.tgz")

    [record] = await optimiser.enact([swap], plan_id="p-1")

    assert record.status is S.SUCCESS
    assert record.detail == "orchestrator: SUCCESS — swapped"
    assert record.plan_id == "p-1"
    [request] = orchestrator.orchestrate_swap.await_args.args
    assert request.module_id == "memory.index"
    assert request.new_version == "2.4.1"
    assert request.artifact_ref == "a/b.tgz"
    assert request.new_code is None  # never the reference's b"" placeholder
    assert request.requester == "self_optimiser"
    assert request.action_id == swap.action_id


async def test_orchestrator_failure(clock: ManualClock, orchestrator: Mock) -> None:
    orchestrator.orchestrate_swap.side_effect = RuntimeError("checksum mismatch")
    optimiser = AsyncSelfOptimiser(orchestrator, clock=clock)

    [record] = await optimiser.enact([action(K.HOT_SWAP_MODULE, "memory.index")])

    assert record.status is S.FAILED
    assert record.detail == "orchestrator raised RuntimeError: checksum mismatch"
    assert (await optimiser.stats())["failed"] == 1


async def test_tune_threshold_adjusts_config(clock: ManualClock) -> None:
    cycle = seed_cycle(detector_config=DetectorConfig(200.0, 500.0, 0.05))
    optimiser = AsyncSelfOptimiser(cognitive_cycle=cycle, clock=clock)

    [record] = await optimiser.enact([action(K.TUNE_THRESHOLD, suggested_delta="0.25")])

    assert record.status is S.SUCCESS
    assert cycle._detector_config == DetectorConfig(250.0, 500.0, 0.05)
    assert record.detail == "p95_threshold adjusted to 250.0ms (was 200.0ms)"


class _SlowDetector:
    """Counts how many tunings run at once; each takes a few loop turns."""

    def __init__(self) -> None:
        self.running = 0
        self.most_at_once = 0

    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        for _ in range(3):
            await asyncio.sleep(0)
        self.running -= 1
        return SubsystemResult(True, "tuned")


async def test_concurrent_enact_calls(clock: ManualClock) -> None:
    detector = _SlowDetector()
    optimiser = AsyncSelfOptimiser(subsystems=Subsystems(detector=detector), clock=clock)

    results = await asyncio.gather(
        *(optimiser.enact([action(K.TUNE_THRESHOLD, "det")]) for _ in range(3))
    )

    statuses = sorted(records[0].status.value for records in results)
    # Without the lock all three would pass the gate before the first SUCCESS armed it.
    assert statuses == ["RATE_LIMITED", "RATE_LIMITED", "SUCCESS"]
    assert detector.most_at_once == 1
    assert await optimiser.stats() == {"enacted": 1, "rate_limited": 2, "enact_calls": 3}


async def test_reset_clears_state(clock: ManualClock, cycle: Mock) -> None:
    optimiser = AsyncSelfOptimiser(cognitive_cycle=cycle, clock=clock)
    await optimiser.enact([action(K.REDUCE_LOAD, "ingest"), action(K.REDUCE_LOAD, "ingest")])
    assert await optimiser.stats() == {"enacted": 1, "rate_limited": 1, "enact_calls": 1}

    await optimiser.reset()

    assert await optimiser.stats() == {}
    [again] = await optimiser.enact([action(K.REDUCE_LOAD, "ingest")])
    assert again.status is S.SUCCESS  # the cool-down was forgotten too
