"""The guardrails that guard the effect, not the request: per-setting cool-downs, bounds,
stabilization windows, blast-radius budgets and circuit breakers (injected clock, no broker)."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import Mock

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from schemas import ActionKind, EnactmentRecord, EnactmentStatus, ImprovementAction
from tests.support.factories import action
from tests.support.subsystems import SwapOutcome, seed_cycle, seed_orchestrator
from worker import AsyncSelfOptimiser, DetectorConfig, ManualClock, OptimiserConfig
from worker.core.memory import RecordMemory
from worker.core.metrics import OptimiserMetrics
from worker.core.planstep import PlanStep
from worker.settings import WorkerSettings

K = ActionKind
S = EnactmentStatus
#: Cool-downs off, so that each test sees the one guard it is about.
NO_COOL_DOWN: dict[str, Any] = {"cool_down_s": 0}


def optimiser_for(
    clock: ManualClock,
    *,
    cycle: Mock | None = None,
    orchestrator: Mock | None = None,
    alerts: asyncio.Queue[ImprovementAction] | None = None,
    metrics: OptimiserMetrics | None = None,
    **config: Any,
) -> AsyncSelfOptimiser:
    return AsyncSelfOptimiser(
        orchestrator,
        cycle,
        alerts,
        OptimiserConfig(**config),
        clock=clock,
        metrics=metrics,
    )


async def one(optimiser: AsyncSelfOptimiser, item: ImprovementAction) -> EnactmentRecord:
    [record] = await optimiser.enact([item])
    return record


# --- every change knows its setting -------------------------------------------------------


async def test_records_carry_the_setting_and_what_changed(clock: ManualClock) -> None:
    cycle = seed_cycle(detector_config=DetectorConfig(200.0, 500.0, 0.05))
    optimiser = optimiser_for(clock, cycle=cycle, orchestrator=seed_orchestrator())

    tune, budget, swap, shed, flag, noop = await optimiser.enact(
        [
            action(K.TUNE_THRESHOLD, "cognition.a", suggested_delta="0.25"),
            action(K.INCREASE_BUDGET, "search", budget_factor="2"),
            action(K.HOT_SWAP_MODULE, "memory", target_version="2.1"),
            action(K.REDUCE_LOAD, "ingest"),
            action(K.FLAG_FOR_REVIEW, "ethics"),
            action(K.NO_OP, "x"),
        ]
    )

    assert (tune.setting, tune.old, tune.new) == ("detector.p95_threshold_ms", 200.0, 250.0)
    assert (budget.setting, budget.old, budget.new) == ("budget_s[search]", 1.0, 2.0)
    assert (swap.setting, swap.new) == ("version[memory]", "2.1")
    assert (shed.setting, shed.new) == ("load_shed[ingest]", "shedding")
    assert flag.setting == "review[ethics]"
    assert noop.setting == ""


async def test_a_fresh_module_name_is_no_way_around_the_cool_down(clock: ManualClock) -> None:
    optimiser = optimiser_for(clock, cycle=seed_cycle(), cool_down_s=300)

    records = [await one(optimiser, action(K.TUNE_THRESHOLD, f"m{i}")) for i in range(20)]

    assert [r.status for r in records] == [S.SUCCESS] + [S.RATE_LIMITED] * 19
    assert "on detector.p95_threshold_ms" in records[1].detail


async def test_a_per_module_detector_scope_gives_each_module_its_own_setting(
    clock: ManualClock,
) -> None:
    optimiser = optimiser_for(clock, cycle=seed_cycle(), cool_down_s=300, detector_scope="module")

    first, other, again = [
        await one(optimiser, action(K.TUNE_THRESHOLD, module)) for module in ("a", "b", "a")
    ]

    assert (first.status, other.status, again.status) == (S.SUCCESS, S.SUCCESS, S.RATE_LIMITED)
    assert first.setting == "detector.p95_threshold_ms[a]"


async def test_a_change_that_changes_nothing_is_skipped_and_arms_nothing(
    clock: ManualClock,
) -> None:
    cycle = seed_cycle()
    optimiser = optimiser_for(clock, cycle=cycle, cool_down_s=300)

    zero = await one(optimiser, action(K.TUNE_THRESHOLD, suggested_delta="-0"))
    tiny = await one(optimiser, action(K.TUNE_THRESHOLD, suggested_delta="1e-400"))
    budget = await one(optimiser, action(K.INCREASE_BUDGET, budget_factor="1"))
    real = await one(optimiser, action(K.TUNE_THRESHOLD, suggested_delta="0.1"))

    assert [r.status for r in (zero, tiny, budget)] == [S.SKIPPED] * 3
    assert zero.detail == "no change: detector.p95_threshold_ms would stay as it is"
    assert real.status is S.SUCCESS  # nothing was armed by the three before it


# --- bounds per setting (HPA policies) ----------------------------------------------------


async def test_a_setting_moves_at_most_its_bound_per_period(clock: ManualClock) -> None:
    cycle = seed_cycle(detector_config=DetectorConfig(200.0, 500.0, 0.05))
    optimiser = optimiser_for(clock, cycle=cycle, **NO_COOL_DOWN)

    first = await one(optimiser, action(K.TUNE_THRESHOLD, "a", suggested_delta="0.5"))
    trimmed = await one(optimiser, action(K.TUNE_THRESHOLD, "b", suggested_delta="0.5"))
    refused = await one(optimiser, action(K.TUNE_THRESHOLD, "c", suggested_delta="0.1"))

    assert first.new == 300.0
    assert trimmed.status is S.SUCCESS
    assert trimmed.new == pytest.approx(400.0)  # x1.5 asked, x1.33 left of the x2
    assert trimmed.guard == "bound"
    assert "trimmed by bound: asked x1.5, moving x1.33 (at most x2 per 10 min)" in trimmed.detail
    assert refused.status is S.RATE_LIMITED
    assert refused.detail.startswith(
        "bound: detector.p95_threshold_ms moved x2 in the last 10 min (at most x2 either way); "
        "nothing left up until 2026-01-01T00:10:00Z"
    )
    assert cycle._detector_config.latency_p95_threshold_ms == pytest.approx(400.0)

    clock.advance(600)
    assert (await one(optimiser, action(K.TUNE_THRESHOLD, suggested_delta="0.1"))).status is (
        S.SUCCESS
    )


async def test_the_bound_is_a_sliding_window_not_a_calendar(clock: ManualClock) -> None:
    # x2 at the end of one period and x2 at the start of the next would be x4 in a minute.
    cycle = seed_cycle(budget_map={"m": 1.0})
    optimiser = optimiser_for(clock, cycle=cycle, **NO_COOL_DOWN)
    clock.advance(570)
    await one(optimiser, action(K.INCREASE_BUDGET, "m", budget_factor="2"))
    clock.advance(60)

    refused = await one(optimiser, action(K.INCREASE_BUDGET, "m", budget_factor="2"))

    assert refused.status is S.RATE_LIMITED
    assert cycle._budget_map["m"] == 2.0


async def test_a_downward_move_is_bounded_too(clock: ManualClock) -> None:
    cycle = seed_cycle(detector_config=DetectorConfig(1000.0, 2000.0, 0.05))
    optimiser = optimiser_for(clock, cycle=cycle, **NO_COOL_DOWN)

    first = await one(optimiser, action(K.TUNE_THRESHOLD, suggested_delta="-0.4"))
    second = await one(optimiser, action(K.TUNE_THRESHOLD, suggested_delta="-0.4"))

    assert first.new == pytest.approx(600.0)
    assert second.new == pytest.approx(500.0)  # /2 in all, and no further
    assert second.guard == "bound"


# --- stabilization windows ----------------------------------------------------------------


async def test_a_reversal_inside_the_stabilization_window_is_rate_limited(
    clock: ManualClock,
) -> None:
    cycle = seed_cycle(detector_config=DetectorConfig(200.0, 500.0, 0.05))
    optimiser = optimiser_for(clock, cycle=cycle, **NO_COOL_DOWN)
    await one(optimiser, action(K.TUNE_THRESHOLD, "a", suggested_delta="0.2"))
    clock.advance(100)

    back = await one(optimiser, action(K.TUNE_THRESHOLD, "b", suggested_delta="-0.1"))
    same_way = await one(optimiser, action(K.TUNE_THRESHOLD, "c", suggested_delta="0.1"))
    clock.advance(600)
    later = await one(optimiser, action(K.TUNE_THRESHOLD, "d", suggested_delta="-0.1"))

    assert back.status is S.RATE_LIMITED
    assert back.guard == "stabilization"
    assert back.detail == (
        "stabilization: detector.p95_threshold_ms went up at 2026-01-01T00:00:00Z; reversing "
        "it is refused for 10 min after a change (500s left)"
    )
    assert same_way.status is S.SUCCESS
    assert later.status is S.SUCCESS


async def test_swapping_back_to_the_version_before_is_a_reversal(
    clock: ManualClock, orchestrator: Mock
) -> None:
    optimiser = optimiser_for(clock, orchestrator=orchestrator, **NO_COOL_DOWN)
    await one(optimiser, action(K.HOT_SWAP_MODULE, "memory", target_version="1.0"))
    await one(optimiser, action(K.HOT_SWAP_MODULE, "memory", target_version="2.0"))

    back = await one(optimiser, action(K.HOT_SWAP_MODULE, "memory", target_version="1.0"))

    assert back.status is S.RATE_LIMITED
    assert "swapping back is refused" in back.detail
    assert "from 1.0 to 2.0" in back.detail


# --- blast-radius budgets -----------------------------------------------------------------


async def test_hot_swaps_across_modules_stay_within_their_budget(
    clock: ManualClock, orchestrator: Mock
) -> None:
    optimiser = optimiser_for(clock, orchestrator=orchestrator)

    records = [await one(optimiser, action(K.HOT_SWAP_MODULE, f"m{i}")) for i in range(6)]

    assert [r.status for r in records] == [S.SUCCESS] * 3 + [S.RATE_LIMITED] * 3
    assert records[3].detail == (
        "swap budget: 3 hot swaps in the last 10 min (at most 3); next allowed at "
        "2026-01-01T00:10:00Z"
    )
    assert orchestrator.orchestrate_swap.await_count == 3
    clock.advance(600)
    assert (await one(optimiser, action(K.HOT_SWAP_MODULE, "m9"))).status is S.SUCCESS


async def test_failed_swaps_count_against_the_budget(clock: ManualClock) -> None:
    orchestrator = seed_orchestrator(SwapOutcome.ROLLED_BACK, "health check failed")
    optimiser = optimiser_for(clock, orchestrator=orchestrator, breaker_failures=0)

    records = [await one(optimiser, action(K.HOT_SWAP_MODULE, f"m{i}")) for i in range(4)]

    assert [r.status for r in records] == [S.FAILED] * 3 + [S.RATE_LIMITED]


async def test_changes_across_the_namespace_stay_within_their_budget(clock: ManualClock) -> None:
    optimiser = optimiser_for(clock, cycle=seed_cycle(), change_budget=5)

    records = [await one(optimiser, action(K.INCREASE_BUDGET, f"m{i}")) for i in range(7)]

    assert [r.status for r in records] == [S.SUCCESS] * 5 + [S.RATE_LIMITED] * 2
    assert records[5].guard == "change_budget"
    assert records[5].detail.startswith("change budget: 5 changes in the last 10 min (at most 5)")


# --- circuit breakers ---------------------------------------------------------------------


async def test_a_failing_module_opens_its_breaker_and_people_hear_once(clock: ManualClock) -> None:
    orchestrator = seed_orchestrator(SwapOutcome.ROLLED_BACK, "health check failed")
    alerts: asyncio.Queue[ImprovementAction] = asyncio.Queue()
    optimiser = optimiser_for(
        clock, orchestrator=orchestrator, alerts=alerts, swap_budget=100, **NO_COOL_DOWN
    )

    failures = [await one(optimiser, action(K.HOT_SWAP_MODULE, "memory")) for _ in range(3)]
    skipped = [await one(optimiser, action(K.HOT_SWAP_MODULE, "memory")) for _ in range(5)]
    other = await one(optimiser, action(K.HOT_SWAP_MODULE, "vision"))

    assert [r.status for r in failures] == [S.FAILED] * 3
    assert [r.status for r in skipped] == [S.SKIPPED] * 5
    assert skipped[0].detail == (
        "breaker open: 3 failures in 10 min of HOT_SWAP_MODULE on memory, "
        "until 2026-01-01T00:10:00Z"
    )
    assert other.status is S.FAILED  # another module's breaker is its own
    assert orchestrator.orchestrate_swap.await_count == 4
    assert alerts.qsize() == 1
    item = alerts.get_nowait()
    assert item.action_kind is K.FLAG_FOR_REVIEW
    assert item.module_name == "memory"
    assert item.rationale.startswith("circuit breaker opened for HOT_SWAP_MODULE on memory")
    assert [(v.module, v.state) for v in optimiser.breakers()] == [("memory", "open")]


async def test_a_half_open_breaker_lets_one_trial_through(clock: ManualClock) -> None:
    orchestrator = seed_orchestrator(SwapOutcome.ROLLED_BACK, "health check failed")
    alerts: asyncio.Queue[ImprovementAction] = asyncio.Queue()
    optimiser = optimiser_for(
        clock, orchestrator=orchestrator, alerts=alerts, swap_budget=100, **NO_COOL_DOWN
    )
    for _ in range(3):
        await one(optimiser, action(K.HOT_SWAP_MODULE, "memory"))
    clock.advance(600)

    trial, after_trial = await optimiser.enact(
        [action(K.HOT_SWAP_MODULE, "memory"), action(K.HOT_SWAP_MODULE, "memory")],
        config=OptimiserConfig(max_hot_swap_per_cycle=2, swap_budget=100, cool_down_s=0),
    )
    assert trial.status is S.FAILED
    assert trial.guard == "breaker"
    assert "breaker half-open: this is its one trial" in trial.detail
    assert after_trial.status is S.SKIPPED  # open again at once, and quietly
    assert alerts.qsize() == 1

    clock.advance(600)
    orchestrator.orchestrate_swap.return_value = Mock(outcome=SwapOutcome.SUCCESS, detail="ok")
    assert (await one(optimiser, action(K.HOT_SWAP_MODULE, "memory"))).status is S.SUCCESS
    assert optimiser.breakers() == []


async def test_a_half_open_breaker_with_no_trial_for_a_window_closes_as_a_restart_sees_it(
    clock: ManualClock,
) -> None:
    """The failures that opened it are older than the guards' window, all a restarted worker
    reads again: the active worker decides as that one does (it did not, before)."""
    orchestrator = seed_orchestrator(SwapOutcome.ROLLED_BACK, "health check failed")
    active = optimiser_for(clock, orchestrator=orchestrator, swap_budget=100, **NO_COOL_DOWN)
    for _ in range(3):
        await one(active, action(K.HOT_SWAP_MODULE, "memory"))
    clock.advance(600)
    assert [v.state for v in active.breakers()] == ["half-open"]
    clock.advance(600)  # after the cool-off, a whole window without a trial
    assert active.breakers() == []
    restarted = optimiser_for(clock, orchestrator=orchestrator, swap_budget=100, **NO_COOL_DOWN)

    mine = await one(active, action(K.HOT_SWAP_MODULE, "memory"))
    theirs = await one(restarted, action(K.HOT_SWAP_MODULE, "memory"))
    assert mine.status is theirs.status is S.FAILED
    assert mine.guard == theirs.guard
    assert mine.detail == theirs.detail  # no "half-open" trial note
    assert active.breakers() == []  # one failure of three again, not open at once


async def test_an_operator_reset_closes_a_breaker(clock: ManualClock) -> None:
    orchestrator = seed_orchestrator(SwapOutcome.ROLLED_BACK, "health check failed")
    optimiser = optimiser_for(clock, orchestrator=orchestrator, swap_budget=100, **NO_COOL_DOWN)
    for _ in range(3):
        await one(optimiser, action(K.HOT_SWAP_MODULE, "memory"))

    optimiser.reset_breaker("memory", K.HOT_SWAP_MODULE, clock.now())

    assert optimiser.breakers() == []
    assert (await one(optimiser, action(K.HOT_SWAP_MODULE, "memory"))).status is S.FAILED


# --- one learn path: what enact() learns, the stream rebuilds ------------------------------


async def test_learning_the_records_rebuilds_every_guard(clock: ManualClock) -> None:
    orchestrator = seed_orchestrator(SwapOutcome.ROLLED_BACK, "health check failed")
    cycle = seed_cycle()
    active = optimiser_for(clock, cycle=cycle, orchestrator=orchestrator, **NO_COOL_DOWN)
    records = [
        await one(active, action(K.TUNE_THRESHOLD, suggested_delta="0.5")),
        await one(active, action(K.TUNE_THRESHOLD, suggested_delta="0.5")),
        *[await one(active, action(K.HOT_SWAP_MODULE, "memory")) for _ in range(3)],
    ]
    clock.advance(30)
    standby = optimiser_for(clock, cycle=cycle, orchestrator=orchestrator, **NO_COOL_DOWN)
    for record in records:
        assert standby.learn(record) == [] or record.status is S.FAILED

    probes = [
        action(K.TUNE_THRESHOLD, suggested_delta="0.1"),  # bound: nothing left up
        action(K.TUNE_THRESHOLD, suggested_delta="-0.1"),  # stabilization: a reversal
        action(K.HOT_SWAP_MODULE, "memory"),  # breaker open
    ]
    for probe in probes:
        assert (await one(standby, probe)).detail == (await one(active, probe)).detail


def test_the_state_window_is_the_longest_window_of_any_guard() -> None:
    settings = WorkerSettings(
        dedup_window_s=60,
        optimiser=OptimiserConfig(cool_down_s=30, breaker_window_s=900, breaker_cool_off_s=300),
    )
    assert settings.state_window_s == 1200


async def test_every_refusal_is_counted_by_guard_from_zero(clock: ManualClock) -> None:
    registry = CollectorRegistry()
    metrics = OptimiserMetrics(registry)
    before = generate_latest(registry).decode()
    assert 'asi_optimiser_guard_refusals_total{guard="bound"} 0.0' in before

    orchestrator = seed_orchestrator(SwapOutcome.ROLLED_BACK, "no")
    optimiser = optimiser_for(
        clock, orchestrator=orchestrator, metrics=metrics, swap_budget=100, **NO_COOL_DOWN
    )
    for _ in range(4):
        await one(optimiser, action(K.HOT_SWAP_MODULE, "memory"))

    text = generate_latest(registry).decode()
    assert 'asi_optimiser_guard_refusals_total{guard="breaker"} 1.0' in text
    assert 'asi_optimiser_escalations_total{guard="breaker"} 1.0' in text
    assert 'asi_optimiser_breaker_open{action_kind="HOT_SWAP_MODULE",module="memory"} 1.0' in text


async def test_the_plan_step_replays_what_it_remembers(clock: ManualClock) -> None:
    optimiser = optimiser_for(clock, cycle=seed_cycle(), max_enactments_per_cycle=2)
    step = PlanStep(optimiser, RecordMemory(window_s=60, limit=100, clock=clock), clock=clock)
    from schemas import Plan  # noqa: PLC0415

    actions = [action(K.INCREASE_BUDGET, f"m{i}") for i in range(3)]
    first = await step.run(Plan(plan_id="p", actions=actions))
    again = await step.run(Plan(plan_id="p", actions=actions))

    assert [r.status for r in first] == [S.SUCCESS, S.SUCCESS, S.SKIPPED]
    assert first[2].detail == "not enacted: max_enactments_per_cycle is 2"
    assert [r.replay for r in again] == [True, True, True]
    assert [r.detail for r in again] == [r.detail for r in first]
