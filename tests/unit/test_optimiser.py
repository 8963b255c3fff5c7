"""The optimiser beyond the seed's twelve: the reference's defects fixed, bounds, ports, metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import Mock

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from schemas import ActionKind, EnactmentStatus, ImprovementAction, decode_record, encode
from schemas.commands import SubsystemCommand
from tests.support.factories import action
from tests.support.subsystems import SwapOutcome, seed_cycle, seed_orchestrator
from worker import (
    AsyncSelfOptimiser,
    ConfigError,
    DetectorConfig,
    ManualClock,
    NullOptimiser,
    OptimiserConfig,
    OptimiserMetrics,
    SelfOptimiser,
    SubsystemResult,
    Subsystems,
    SubsystemUnavailable,
)
from worker.core.errors import PlanLost

K = ActionKind
S = EnactmentStatus


# --- the reference's defects, fixed -------------------------------------------------------


async def test_first_action_is_not_rate_limited_on_a_young_host_clock(cycle: Mock) -> None:
    # The reference used _last_enacted.get(key, 0.0): with monotonic() < cool_down_s
    # (a host up for less than five minutes) the very first action was RATE_LIMITED.
    clock = ManualClock(monotonic=1.0)
    optimiser = AsyncSelfOptimiser(
        cognitive_cycle=cycle, config=OptimiserConfig(cool_down_s=300), clock=clock
    )

    [record] = await optimiser.enact([action(K.TUNE_THRESHOLD)])

    assert record.status is S.SUCCESS


async def test_attempted_at_is_utc_wall_clock_time_and_duration_is_monotonic() -> None:
    start = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    clock = ManualClock(monotonic=5.0, now=start)

    class SlowLoad:
        async def apply(self, command: SubsystemCommand) -> SubsystemResult:
            clock.advance(0.25)
            return SubsystemResult(True, "shed")

    optimiser = AsyncSelfOptimiser(subsystems=Subsystems(load=SlowLoad()), clock=clock)
    [record] = await optimiser.enact([action(K.REDUCE_LOAD)])

    assert record.attempted_at == start
    assert record.attempted_at.tzinfo is not None
    assert record.duration_s == pytest.approx(0.25)
    on_the_wire = decode_record(encode(record))
    assert on_the_wire.attempted_at == start
    assert b'"attempted_at":"2026-11-23T12:00:00Z"' in encode(record)


async def test_system_clock_records_are_near_now() -> None:
    [record] = await AsyncSelfOptimiser().enact([action(K.NO_OP)])
    assert abs(datetime.now(UTC) - record.attempted_at) < timedelta(seconds=5)


@pytest.mark.parametrize(
    ("kind", "parameters", "reason"),
    [
        (K.TUNE_THRESHOLD, {"suggested_delta": "abc"}, "suggested_delta='abc' is not a number"),
        (K.TUNE_THRESHOLD, {"suggested_delta": ""}, "suggested_delta='' is not a number"),
        (K.TUNE_THRESHOLD, {"suggested_delta": "nan"}, "'nan' is not a number"),
        (K.TUNE_THRESHOLD, {"suggested_delta": "-inf"}, "'-inf' is not a number"),
        (K.TUNE_THRESHOLD, {"suggested_delta": "1e400"}, "'1e400' is not a finite number"),
        # Python's float() takes each of these; JSON's number grammar takes none.
        (K.TUNE_THRESHOLD, {"suggested_delta": "0.0_5"}, "'0.0_5' is not a number"),
        (K.TUNE_THRESHOLD, {"suggested_delta": "\u0661.\u0665"}, "is not a number"),
        (K.TUNE_THRESHOLD, {"suggested_delta": "\uff12"}, "is not a number"),
        (K.TUNE_THRESHOLD, {"suggested_delta": " 0.2\n"}, "is not a number"),
        (K.TUNE_THRESHOLD, {"suggested_delta": "+0.2"}, "is not a number"),
        (K.TUNE_THRESHOLD, {"suggested_delta": ".2"}, "is not a number"),
        # A misspelled name is no default: the action fails, naming what the kind reads.
        (
            K.INCREASE_BUDGET,
            {"budget_factr": "1.1"},
            "unknown parameter 'budget_factr' for INCREASE_BUDGET (it reads: budget_factor)",
        ),
        (
            K.REDUCE_LOAD,
            {"level": "high"},
            "unknown parameter 'level' for REDUCE_LOAD (it reads: none)",
        ),
        (K.HOT_SWAP_MODULE, {"target_version": "v2\x1b[2J"}, "holds a control character"),
        (K.HOT_SWAP_MODULE, {"artifact_ref": "s3://x\n"}, "holds a control character"),
        (
            K.TUNE_THRESHOLD,
            {"suggested_delta": "5"},
            "suggested_delta='5' is out of range [-0.5, 1]",
        ),
        (K.TUNE_THRESHOLD, {"suggested_delta": "-1"}, "is out of range [-0.5, 1]"),
        (
            K.INCREASE_BUDGET,
            {"budget_factor": "1e308"},
            "budget_factor='1e308' is out of range [1, 4]",
        ),
        (K.INCREASE_BUDGET, {"budget_factor": "0.5"}, "budget_factor='0.5' is out of range [1, 4]"),
        (K.INCREASE_BUDGET, {"budget_factor": "1,5"}, "budget_factor='1,5' is not a number"),
        (K.HOT_SWAP_MODULE, {"target_version": " "}, "target_version=' ' must be 1 to 128"),
        (K.HOT_SWAP_MODULE, {"target_version": "v" * 129}, "must be 1 to 128 characters"),
    ],
)
async def test_bad_parameters_give_a_failed_record_with_the_reason(
    clock: ManualClock, kind: ActionKind, parameters: dict[str, str], reason: str
) -> None:
    cycle, orchestrator = seed_cycle(), seed_orchestrator()
    before = cycle._detector_config
    optimiser = AsyncSelfOptimiser(orchestrator, cycle, clock=clock)

    [record] = await optimiser.enact([action(kind, **parameters)])

    assert record.status is S.FAILED
    assert reason in record.detail
    assert cycle._detector_config is before
    assert cycle._budget_map == {}
    orchestrator.orchestrate_swap.assert_not_called()


async def test_bad_parameters_fail_even_without_a_subsystem(clock: ManualClock) -> None:
    # As in the seed, parameters are read before the subsystem is looked for.
    [record] = await AsyncSelfOptimiser(clock=clock).enact(
        [action(K.TUNE_THRESHOLD, suggested_delta="x")]
    )
    assert record.status is S.FAILED


async def test_tuned_threshold_stays_within_floor_and_ceiling(clock: ManualClock) -> None:
    cycle = seed_cycle(detector_config=DetectorConfig(60.0, 500.0, 0.05))
    # The subsystem's floor and ceiling, alone: no bound and no stabilization window.
    config = OptimiserConfig(
        cool_down_s=0,
        threshold_floor_ms=50.0,
        threshold_ceiling_ms=100.0,
        bound_period_s=0,
        stabilization_window_s=0,
    )
    optimiser = AsyncSelfOptimiser(cognitive_cycle=cycle, config=config, clock=clock)

    [down] = await optimiser.enact([action(K.TUNE_THRESHOLD, suggested_delta="-0.5")])
    assert cycle._detector_config.latency_p95_threshold_ms == 50.0
    assert down.detail == "p95_threshold adjusted to 50.0ms (was 60.0ms) (held at floor 50ms)"

    for _ in range(3):
        await optimiser.enact([action(K.TUNE_THRESHOLD, suggested_delta="1.0")])
    assert cycle._detector_config.latency_p95_threshold_ms == 100.0


async def test_budget_stays_within_ceiling(clock: ManualClock) -> None:
    cycle = seed_cycle(budget_map={"search": 20.0})
    config = OptimiserConfig(cool_down_s=0, budget_ceiling_s=30.0, bound_period_s=0)
    optimiser = AsyncSelfOptimiser(cognitive_cycle=cycle, config=config, clock=clock)

    [record] = await optimiser.enact([action(K.INCREASE_BUDGET, "search", budget_factor="4")])

    assert record.status is S.SUCCESS
    assert cycle._budget_map["search"] == 30.0
    assert record.detail == "budget 20.00→30.00 (held at ceiling 30s)"


async def test_budget_of_an_unknown_module_starts_from_the_default(clock: ManualClock) -> None:
    cycle = seed_cycle()
    optimiser = AsyncSelfOptimiser(
        cognitive_cycle=cycle, config=OptimiserConfig(default_budget_s=2.0), clock=clock
    )
    [record] = await optimiser.enact([action(K.INCREASE_BUDGET, "new")])
    assert cycle._budget_map == {"new": 3.0}
    assert record.detail == "budget 2.00→3.00"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_enactments_per_cycle": 0}, "max_enactments_per_cycle must be >= 1"),
        ({"max_hot_swap_per_cycle": -1}, "max_hot_swap_per_cycle must be >= 0"),
        ({"cool_down_s": -1.0}, "cool_down_s must be >= 0"),
        ({"cool_down_s": float("nan")}, "cool_down_s must be a finite number"),
        ({"subsystem_timeout_s": 0.0}, "subsystem_timeout_s must be > 0"),
        ({"max_suggested_delta": 0.05}, "min_suggested_delta <= default_suggested_delta"),
        ({"threshold_floor_ms": 0.0}, "0 < threshold_floor_ms"),
        ({"max_budget_factor": float("inf")}, "max_budget_factor must be a finite number"),
        ({"budget_floor_s": 2.0}, "budget_floor_s <= default_budget_s"),
    ],
)
def test_invalid_config_is_refused_with_a_clear_message(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        OptimiserConfig(**overrides)


def test_config_is_frozen() -> None:
    config = OptimiserConfig()
    with pytest.raises(AttributeError):
        config.dry_run = True  # type: ignore[misc]


# --- gates, statuses and ports ------------------------------------------------------------


async def test_missing_subsystems_give_skipped_with_the_reason(clock: ManualClock) -> None:
    optimiser = AsyncSelfOptimiser(clock=clock)
    kinds = [K.TUNE_THRESHOLD, K.INCREASE_BUDGET, K.REDUCE_LOAD, K.HOT_SWAP_MODULE]

    records = await optimiser.enact([action(kind, f"m{i}") for i, kind in enumerate(kinds)])

    assert [(r.status, r.detail) for r in records] == [
        (S.SKIPPED, "no detector subsystem configured"),
        (S.SKIPPED, "no budget subsystem configured"),
        (S.SKIPPED, "no load shedder configured"),
        (S.SKIPPED, "no orchestrator injected"),
    ]


async def test_a_cycle_without_the_attribute_skips_as_the_seed_did(clock: ManualClock) -> None:
    cycle = Mock(spec_set=["_budget_map"], _budget_map={})
    optimiser = AsyncSelfOptimiser(cognitive_cycle=cycle, clock=clock)

    tune, load = await optimiser.enact([action(K.TUNE_THRESHOLD), action(K.REDUCE_LOAD)])

    assert (tune.status, tune.detail) == (S.SKIPPED, "no detector_config available on cycle")
    assert (load.status, load.detail) == (S.SKIPPED, "no load_shedder on cycle")


async def test_skipped_and_failed_do_not_arm_the_cool_down(clock: ManualClock) -> None:
    orchestrator = seed_orchestrator(SwapOutcome.ROLLED_BACK, "health check failed")
    optimiser = AsyncSelfOptimiser(orchestrator, clock=clock)

    first = await optimiser.enact([action(K.HOT_SWAP_MODULE, "memory")])
    second = await optimiser.enact([action(K.HOT_SWAP_MODULE, "memory")])
    no_ops = await optimiser.enact([action(K.NO_OP), action(K.NO_OP)])

    assert first[0].status is S.FAILED
    assert first[0].detail == "orchestrator: ROLLED_BACK — health check failed"
    assert second[0].status is S.FAILED  # not RATE_LIMITED
    assert [r.status for r in no_ops] == [S.SKIPPED, S.SKIPPED]


async def test_flag_for_review_is_rate_limited_per_module_like_any_kind(
    clock: ManualClock,
) -> None:
    # The seed gates every kind; a second flag on the same module within the cool-down
    # is RATE_LIMITED rather than a second page to the operators.
    alerts: asyncio.Queue[ImprovementAction] = asyncio.Queue()
    optimiser = AsyncSelfOptimiser(alert_queue=alerts, clock=clock)
    records = await optimiser.enact(
        [action(K.FLAG_FOR_REVIEW, "x"), action(K.FLAG_FOR_REVIEW, "x")]
    )
    assert [r.status for r in records] == [S.SUCCESS, S.RATE_LIMITED]
    assert alerts.qsize() == 1


async def test_rate_limit_can_be_turned_off(clock: ManualClock, cycle: Mock) -> None:
    optimiser = AsyncSelfOptimiser(
        cognitive_cycle=cycle, config=OptimiserConfig(enable_rate_limit=False), clock=clock
    )
    records = await optimiser.enact([action(K.REDUCE_LOAD, "a"), action(K.REDUCE_LOAD, "a")])
    assert [r.status for r in records] == [S.SUCCESS, S.SUCCESS]


async def test_per_call_config_overrides_the_default(clock: ManualClock, cycle: Mock) -> None:
    optimiser = AsyncSelfOptimiser(cognitive_cycle=cycle, clock=clock)
    [dry] = await optimiser.enact([action(K.REDUCE_LOAD)], config=OptimiserConfig(dry_run=True))
    [real] = await optimiser.enact([action(K.REDUCE_LOAD)])
    assert dry.status is S.SKIPPED
    assert real.status is S.SUCCESS


async def test_a_full_review_queue_fails_the_action_instead_of_blocking(
    clock: ManualClock,
) -> None:
    alerts: asyncio.Queue[ImprovementAction] = asyncio.Queue(maxsize=1)
    optimiser = AsyncSelfOptimiser(alert_queue=alerts, clock=clock)

    first, second = await optimiser.enact(
        [action(K.FLAG_FOR_REVIEW, "a"), action(K.FLAG_FOR_REVIEW, "b")]
    )

    assert first.status is S.SUCCESS
    assert second.status is S.FAILED
    assert "review queue is full (1 items waiting)" in second.detail


async def test_a_hung_subsystem_fails_after_the_timeout() -> None:
    class HungSwap:
        async def apply(self, command: SubsystemCommand) -> SubsystemResult:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    optimiser = AsyncSelfOptimiser(
        subsystems=Subsystems(orchestrator=HungSwap()),
        config=OptimiserConfig(subsystem_timeout_s=0.05),
    )

    [record] = await optimiser.enact([action(K.HOT_SWAP_MODULE)])

    assert record.status is S.FAILED
    assert record.detail == "orchestrator did not answer within 0.05s"


async def test_a_port_that_says_unavailable_gives_skipped(clock: ManualClock) -> None:
    class Offline:
        async def apply(self, command: SubsystemCommand) -> SubsystemResult:
            raise SubsystemUnavailable("no detector listening")

    optimiser = AsyncSelfOptimiser(subsystems=Subsystems(detector=Offline()), clock=clock)
    [record] = await optimiser.enact([action(K.TUNE_THRESHOLD)])
    assert (record.status, record.detail) == (S.SKIPPED, "no detector listening")


async def test_a_port_answering_nonsense_gives_failed_not_an_exception(clock: ManualClock) -> None:
    class Sloppy:
        async def apply(self, command: SubsystemCommand) -> Any:
            return None

    optimiser = AsyncSelfOptimiser(subsystems=Subsystems(load=Sloppy()), clock=clock)
    [record] = await optimiser.enact([action(K.REDUCE_LOAD)])
    assert (record.status, record.detail) == (
        S.FAILED,
        "load shedder answered NoneType, not a result",
    )


async def test_a_huge_exception_message_is_cut_to_fit_the_record(
    clock: ManualClock, orchestrator: Mock
) -> None:
    orchestrator.orchestrate_swap.side_effect = RuntimeError("x" * 100_000)
    optimiser = AsyncSelfOptimiser(orchestrator, clock=clock)
    [record] = await optimiser.enact([action(K.HOT_SWAP_MODULE)])
    assert record.status is S.FAILED
    assert decode_record(encode(record)) == record


async def test_cancellation_is_not_swallowed(clock: ManualClock) -> None:
    started = asyncio.Event()

    class Hung:
        async def apply(self, command: SubsystemCommand) -> SubsystemResult:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    optimiser = AsyncSelfOptimiser(subsystems=Subsystems(load=Hung()), clock=clock)
    task = asyncio.create_task(optimiser.enact([action(K.REDUCE_LOAD)]))
    async with asyncio.timeout(5):
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The lock was released: the optimiser still works.
    assert await optimiser.enact([action(K.NO_OP)])


def test_both_optimisers_satisfy_the_protocol() -> None:
    assert isinstance(AsyncSelfOptimiser(), SelfOptimiser)
    assert isinstance(NullOptimiser(), SelfOptimiser)


async def test_null_optimiser_does_nothing() -> None:
    null = NullOptimiser()
    assert await null.enact([action(K.HOT_SWAP_MODULE)]) == []
    assert await null.stats() == {}
    await null.reset()


def test_seed_objects_and_ports_are_not_mixed_by_accident(cycle: Mock) -> None:
    with pytest.raises(ConfigError, match="not both"):
        AsyncSelfOptimiser(cognitive_cycle=cycle, subsystems=Subsystems())
    with pytest.raises(ConfigError, match="not both"):
        AsyncSelfOptimiser(alert_queue=asyncio.Queue(), review=Mock())


# --- metrics ------------------------------------------------------------------------------


async def test_metrics_carry_the_seed_names_and_labels(clock: ManualClock) -> None:
    registry = CollectorRegistry()
    orchestrator = seed_orchestrator()
    optimiser = AsyncSelfOptimiser(
        orchestrator,
        seed_cycle(),
        config=OptimiserConfig(max_hot_swap_per_cycle=2),
        clock=clock,
        metrics=OptimiserMetrics(registry),
    )
    orchestrator.orchestrate_swap.side_effect = [
        orchestrator.orchestrate_swap.return_value,
        RuntimeError("boom"),
    ]

    await optimiser.enact(
        [
            action(K.TUNE_THRESHOLD, "det"),
            action(K.TUNE_THRESHOLD, "det"),
            action(K.HOT_SWAP_MODULE, "mem"),
            action(K.HOT_SWAP_MODULE, "vis"),
            action(K.NO_OP),
        ]
    )

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("asi_optimiser_enact_calls_total") == 1
    assert (
        value("asi_optimiser_actions_enacted_total", action_kind="TUNE_THRESHOLD", status="SUCCESS")
        == 1
    )
    assert (
        value(
            "asi_optimiser_actions_enacted_total",
            action_kind="TUNE_THRESHOLD",
            status="RATE_LIMITED",
        )
        == 1
    )
    assert value("asi_optimiser_actions_enacted_total", action_kind="NO_OP", status="SKIPPED") == 1
    assert (
        value(
            "asi_optimiser_actions_rate_limited_total", module="det", action_kind="TUNE_THRESHOLD"
        )
        == 1
    )
    assert value("asi_optimiser_hot_swaps_total", module="mem", outcome="SUCCESS") == 1
    assert value("asi_optimiser_hot_swaps_total", module="vis", outcome="FAILED") == 1
    # Only dispatched actions are timed: two TUNE_THRESHOLD records, one of them gated.
    assert value("asi_optimiser_enact_duration_seconds_count", action_kind="TUNE_THRESHOLD") == 1
    assert value("asi_optimiser_enact_duration_seconds_count", action_kind="HOT_SWAP_MODULE") == 2


async def test_hot_swaps_not_handed_to_an_orchestrator_are_not_counted(clock: ManualClock) -> None:
    registry = CollectorRegistry()
    optimiser = AsyncSelfOptimiser(clock=clock, metrics=OptimiserMetrics(registry))
    await optimiser.enact([action(K.HOT_SWAP_MODULE, "mem")])
    assert (
        registry.get_sample_value(
            "asi_optimiser_hot_swaps_total", {"module": "mem", "outcome": "FAILED"}
        )
        is None
    )


async def test_the_duration_histogram_is_cumulative_and_exposes_as_text(
    clock: ManualClock,
) -> None:
    registry = CollectorRegistry()
    metrics = OptimiserMetrics(registry)

    class Timed:
        def __init__(self, seconds: float) -> None:
            self.seconds = seconds

        async def apply(self, command: SubsystemCommand) -> SubsystemResult:
            clock.advance(self.seconds)
            return SubsystemResult(True, "shed")

    for seconds in (0.0001, 0.003, 2.0, 100.0):
        optimiser = AsyncSelfOptimiser(
            subsystems=Subsystems(load=Timed(seconds)), clock=clock, metrics=metrics
        )
        await optimiser.enact([action(K.REDUCE_LOAD)])

    def bucket(le: str) -> float | None:
        return registry.get_sample_value(
            "asi_optimiser_enact_duration_seconds_bucket", {"action_kind": "REDUCE_LOAD", "le": le}
        )

    assert bucket("0.0001") == 1  # le is inclusive
    assert bucket("0.005") == 2
    assert bucket("2.5") == 3
    assert bucket("30.0") == 3
    assert bucket("+Inf") == 4
    assert registry.get_sample_value(
        "asi_optimiser_enact_duration_seconds_sum", {"action_kind": "REDUCE_LOAD"}
    ) == pytest.approx(102.0031)
    text = generate_latest(registry).decode()
    assert (
        'asi_optimiser_actions_enacted_total{action_kind="REDUCE_LOAD",status="SUCCESS"} 4.0'
        in text
    )
    assert "# TYPE asi_optimiser_enact_duration_seconds histogram" in text


async def test_a_pause_skips_every_action_past_every_cap_and_arms_nothing(cycle: Mock) -> None:
    alerts: asyncio.Queue[ImprovementAction] = asyncio.Queue()
    optimiser = AsyncSelfOptimiser(None, cycle, alerts, OptimiserConfig(max_enactments_per_cycle=2))
    kinds = [ActionKind.TUNE_THRESHOLD, ActionKind.FLAG_FOR_REVIEW, ActionKind.NO_OP]

    optimiser.pause("incident 7")
    paused = await optimiser.enact([action(kind) for kind in kinds])

    assert [(r.status, r.detail) for r in paused] == [
        (EnactmentStatus.SKIPPED, "paused: incident 7")
    ] * 3  # every action gets its record, the per-call cap notwithstanding
    assert cycle._detector_config.latency_p95_threshold_ms == 200.0
    assert alerts.empty()
    optimiser.resume()
    assert optimiser.paused is None
    [tuned] = await optimiser.enact([action(ActionKind.TUNE_THRESHOLD)])
    assert tuned.status is EnactmentStatus.SUCCESS  # the pause armed no cool-down


class _LosingSink:
    """A review sink that finds the plan lost when its item would go out, as the AMQP one
    does once the delivery is gone (``worker.amqp.review``)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def submit(self, action: ImprovementAction, *, plan_id: str, proceed: Any = None) -> None:
        self.asked.append(action.action_id)
        if proceed is not None and not proceed():
            raise PlanLost("the delivery was lost")


async def test_an_action_held_back_because_the_plan_was_lost_gets_no_record_nor_do_the_rest(
    cycle: Mock,
) -> None:
    sink = _LosingSink()
    optimiser = AsyncSelfOptimiser(cognitive_cycle=cycle, review=sink)
    owned = iter([True, True, False])  # asked before each action, and by the sink
    actions = [action("NO_OP", action_id="a"), action("FLAG_FOR_REVIEW", action_id="b")]
    actions.append(action("NO_OP", action_id="c"))
    records = await optimiser.enact(actions, proceed=lambda: next(owned, False))

    assert [r.action.action_id for r in records] == ["a"]  # no FAILED record for "b"
    assert sink.asked == ["b"]
