"""The seed's Prometheus metrics, on a registry the caller passes in.

The optimiser counts in plain dicts and this collector turns them into metric families
when Prometheus scrapes. prometheus-client's own Counter and Histogram take a lock and
walk their buckets on every call: measured, that more than halved NO_OP throughput
(`python -m bench`), while a dict increment is nearly free. Counting happens on the
event loop thread only; a scrape (another thread) reads copies.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from schemas import ActionKind, EnactmentRecord, EnactmentStatus
from worker.core.guards import GATES
from worker.core.verbs import CHANGES

#: Buckets from an in-process call (tens of µs) to a slow remote hot swap (tens of seconds).
DURATION_BUCKETS: Final = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_BUCKET_LABELS: Final = [*(repr(bound) for bound in DURATION_BUCKETS), "+Inf"]
# Enum attribute lookups cost a Python-level call; the hot path uses a plain name.
_RATE_LIMITED: Final = EnactmentStatus.RATE_LIMITED
#: Every gate that can refuse an action, so each refusal series exists at 0 from the start.
GUARDS: Final = GATES
#: Kinds that a module's rate-limited series is kept for (the ones that change something).
_MODULE_KINDS: Final = tuple(kind for kind in ActionKind if kind in CHANGES)


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive).
        self.counts[bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        buckets = []
        for label, count in zip(_BUCKET_LABELS, list(self.counts), strict=True):
            running += count
            buckets.append((label, float(running)))
        return buckets


class OptimiserMetrics(Collector):
    """``asi_optimiser_*``: names and labels exactly as the design card has them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.enact_calls = 0
        self.actions_enacted: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.actions_rate_limited: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.hot_swaps: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.enact_duration: defaultdict[str, _Histogram] = defaultdict(_Histogram)
        self.guard_refusals: defaultdict[str, int] = defaultdict(int)
        self.escalations: defaultdict[str, int] = defaultdict(int)
        for guard in GUARDS:
            self.guard_refusals[guard] = 0
        self.escalations["breaker"] = 0
        for kind in ActionKind:
            for status in EnactmentStatus:
                self.actions_enacted[kind, status] = 0
        self._modules: set[str] = set()
        #: Set by the optimiser: (module, kind, open) for every breaker it knows.
        self.breakers: Callable[[], Iterable[tuple[str, str, bool]]] = tuple
        registry.register(self)

    # --- counting, on the event loop ---------------------------------------------------

    def know(self, module: str) -> None:
        """A module the worker knows (from its state log, say): its series start at 0.

        A module first seen in a live event still has its first event hidden from
        ``increase()``; the alert rules count a series younger than their window whole.
        """
        if module in self._modules:
            return
        self._modules.add(module)
        for kind in _MODULE_KINDS:
            self.actions_rate_limited.setdefault((module, kind), 0)
        for outcome in ("SUCCESS", "FAILED"):
            self.hot_swaps.setdefault((module, outcome), 0)

    def enact_call(self) -> None:
        """Count one ``enact()`` call."""
        self.enact_calls += 1

    def observe(self, record: EnactmentRecord, *, dispatched: bool) -> None:
        """Count one record; ``dispatched`` records also feed the duration histogram."""
        action = record.action
        # StrEnum members are their own label values; .value would cost an enum lookup.
        kind = action.action_kind
        status = record.status
        self.actions_enacted[kind, status] += 1
        if status is _RATE_LIMITED:
            self.actions_rate_limited[action.module_name, kind] += 1
        if dispatched:
            self.enact_duration[kind].observe(record.duration_s)

    def refused(self, guard: str) -> None:
        """Count an action a guardrail refused (the pause and the per-call cap included)."""
        self.guard_refusals[guard] += 1

    def escalated(self, guard: str) -> None:
        """Count a review item a guardrail sent to people (a breaker that opened)."""
        self.escalations[guard] += 1

    def hot_swap(self, module: str, succeeded: bool) -> None:
        """Count a hot swap the orchestrator was asked to do."""
        self.hot_swaps[module, "SUCCESS" if succeeded else "FAILED"] += 1

    # --- exposition, on the scraping thread --------------------------------------------

    def describe(self) -> Iterator[Metric]:
        return self._families(empty=True)

    def collect(self) -> Iterator[Metric]:
        return self._families(empty=False)

    def _families(self, *, empty: bool) -> Iterator[Metric]:
        calls = CounterMetricFamily("asi_optimiser_enact_calls", "Calls of enact().")
        if not empty:
            calls.add_metric([], self.enact_calls)
        yield calls
        yield _counter(
            "asi_optimiser_actions_enacted",
            "Records produced by enact(), by action kind and status.",
            ["action_kind", "status"],
            {} if empty else self.actions_enacted,
        )
        yield _counter(
            "asi_optimiser_actions_rate_limited",
            "Actions refused by the cool-down gate.",
            ["module", "action_kind"],
            {} if empty else self.actions_rate_limited,
        )
        yield _counter(
            "asi_optimiser_hot_swaps",
            "Hot swaps handed to the orchestrator, by outcome (SUCCESS or FAILED).",
            ["module", "outcome"],
            {} if empty else self.hot_swaps,
        )
        durations = HistogramMetricFamily(
            "asi_optimiser_enact_duration_seconds",
            "Time to enact one dispatched action.",
            labels=["action_kind"],
        )
        for kind, histogram in ({} if empty else dict(self.enact_duration)).items():
            durations.add_metric([str(kind)], histogram.cumulative(), sum_value=histogram.total)
        yield durations
        yield _by_guard(
            "asi_optimiser_guard_refusals",
            "Actions refused by a guardrail (every refusal is a record), by guard.",
            {} if empty else self.guard_refusals,
        )
        yield _by_guard(
            "asi_optimiser_escalations",
            "Review items a guardrail sent to people (a circuit breaker that opened), by guard.",
            {} if empty else self.escalations,
        )
        breakers = GaugeMetricFamily(
            "asi_optimiser_breaker_open",
            "1 while the circuit breaker of (module, action_kind) is open or half-open, else 0.",
            labels=["module", "action_kind"],
        )
        for module, kind, is_open in () if empty else self.breakers():
            breakers.add_metric([module, kind], 1.0 if is_open else 0.0)
        yield breakers


def _counter(
    name: str, documentation: str, labels: list[str], values: dict[tuple[str, str], int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for label_values, value in dict(values).items():  # a copy: the loop may be counting
        family.add_metric([str(label) for label in label_values], value)
    return family


def _by_guard(name: str, documentation: str, counts: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["guard"])
    for guard, count in dict(counts).items():  # a copy: the loop may be counting
        family.add_metric([guard], count)
    return family
