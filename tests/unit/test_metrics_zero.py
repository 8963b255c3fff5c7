"""Every series a first event lands in exists at 0 before it: `increase()` sees that event."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from schemas import ActionKind, EnactmentStatus
from worker.amqp.metrics import PARK_REASONS, PLAN_OUTCOMES, WorkerMetrics
from worker.core.metrics import OptimiserMetrics


def _series(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    }


def test_the_counters_exist_at_zero_for_every_label_value_known_at_start_up() -> None:
    registry = CollectorRegistry()
    OptimiserMetrics(registry)
    WorkerMetrics(registry)
    enacted = _series(registry, "asi_optimiser_actions_enacted_total")
    assert len(enacted) == len(ActionKind) * len(EnactmentStatus)
    assert set(enacted.values()) == {0.0}
    parked = _series(registry, "asi_optimiser_plans_parked_total")
    assert {dict(k)["reason"] for k in parked} == set(PARK_REASONS)
    consumed = _series(registry, "asi_optimiser_plans_consumed_total")
    assert {dict(k)["outcome"] for k in consumed} == set(PLAN_OUTCOMES)
    failures = _series(registry, "asi_optimiser_publish_failures_total")
    assert {dict(k)["target"] for k in failures} >= {"results", "invalid"}


def test_a_module_learned_from_the_state_log_has_its_series_at_zero() -> None:
    registry = CollectorRegistry()
    metrics = OptimiserMetrics(registry)
    metrics.know("memory.index")
    swaps = _series(registry, "asi_optimiser_hot_swaps_total")
    assert swaps == {
        (("module", "memory.index"), ("outcome", "FAILED")): 0.0,
        (("module", "memory.index"), ("outcome", "SUCCESS")): 0.0,
    }
    limited = _series(registry, "asi_optimiser_actions_rate_limited_total")
    assert {dict(k)["action_kind"] for k in limited} == {
        "TUNE_THRESHOLD", "INCREASE_BUDGET", "REDUCE_LOAD", "HOT_SWAP_MODULE",
    }  # fmt: skip
    metrics.hot_swap("memory.index", succeeded=False)
    assert (
        _series(registry, "asi_optimiser_hot_swaps_total")[
            (("module", "memory.index"), ("outcome", "FAILED"))
        ]
        == 1.0
    )
