"""The seed's Prometheus metrics, on a registry the caller passes in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from schemas import EnactmentRecord, EnactmentStatus

#: Buckets from an in-process call (tens of µs) to a slow remote hot swap (tens of seconds).
DURATION_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class OptimiserMetrics:
    """``asi_optimiser_*``: names and labels exactly as the design card has them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.enact_calls = Counter(
            "asi_optimiser_enact_calls",
            "Calls of enact().",
            registry=registry,
        )
        self.actions_enacted = Counter(
            "asi_optimiser_actions_enacted",
            "Records produced by enact(), by action kind and status.",
            ["action_kind", "status"],
            registry=registry,
        )
        self.actions_rate_limited = Counter(
            "asi_optimiser_actions_rate_limited",
            "Actions refused by the cool-down gate.",
            ["module", "action_kind"],
            registry=registry,
        )
        self.hot_swaps = Counter(
            "asi_optimiser_hot_swaps",
            "Hot swaps handed to the orchestrator, by outcome (SUCCESS or FAILED).",
            ["module", "outcome"],
            registry=registry,
        )
        self.enact_duration = Histogram(
            "asi_optimiser_enact_duration_seconds",
            "Time to enact one dispatched action.",
            ["action_kind"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # labels() takes a lock and hashes its arguments; the hot path reuses the children.
        self._enacted: dict[tuple[str, str], Counter] = {}
        self._duration: dict[str, Histogram] = {}

    def observe(self, record: EnactmentRecord, *, dispatched: bool) -> None:
        """Count one record; ``dispatched`` records also feed the duration histogram."""
        kind = record.action.action_kind.value
        status = record.status.value
        counter = self._enacted.get((kind, status))
        if counter is None:
            counter = self._enacted[kind, status] = self.actions_enacted.labels(kind, status)
        counter.inc()
        if status == EnactmentStatus.RATE_LIMITED:
            self.actions_rate_limited.labels(record.action.module_name, kind).inc()
        if dispatched:
            histogram = self._duration.get(kind)
            if histogram is None:
                histogram = self._duration[kind] = self.enact_duration.labels(kind)
            histogram.observe(record.duration_s)

    def hot_swap(self, module: str, succeeded: bool) -> None:
        """Count a hot swap the orchestrator was asked to do."""
        self.hot_swaps.labels(module, "SUCCESS" if succeeded else "FAILED").inc()
