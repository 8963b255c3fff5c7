"""The worker's own metrics: counted per plan, not per action, so plain prometheus-client."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.messages import ParkReason
from worker.amqp.outcome import Fate
from worker.core.metrics import DURATION_BUCKETS

#: Label values the worker's own counters know at start-up: each series exists at 0, so
#: `increase()` sees the first event (a series born at 1 hides it).
PLAN_OUTCOMES: Final = tuple(Fate)
PARK_REASONS: Final = tuple(ParkReason)
PUBLISH_TARGETS: Final = ("results", "invalid", "review")


class WorkerMetrics:
    """The worker's own metrics: counted per plan, not per action, so plain prometheus-client."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.plans_consumed = Counter(
            "asi_optimiser_plans_consumed",
            "Plans taken off the queue, by outcome: acked, parked, requeued, or lost (its channel "
            "went before it was enacted).",
            ["outcome"],
            registry=registry,
        )
        self.plans_parked = Counter(
            "asi_optimiser_plans_parked",
            "Plans moved to N.plans.invalid, by reason.",
            ["reason"],
            registry=registry,
        )
        self.publish_failures = Counter(
            "asi_optimiser_publish_failures",
            "Publishes the broker did not confirm (nack, timeout, lost channel), by target.",
            ["target"],
            registry=registry,
        )
        for counter, values in (
            (self.plans_consumed, PLAN_OUTCOMES),
            (self.plans_parked, PARK_REASONS),
            (self.publish_failures, PUBLISH_TARGETS),
        ):
            for value in values:
                counter.labels(value)
        self.records_unroutable = Counter(
            "asi_optimiser_records_unroutable",
            "Records the broker returned: no queue was bound to receive them.",
            registry=registry,
        )
        self.records_resent = Counter(
            "asi_optimiser_records_resent",
            "Own records found missing from N.results.log after a marker came back (the stream "
            "lost them), and published again.",
            registry=registry,
        )
        self.actions_replayed = Counter(
            "asi_optimiser_actions_replayed",
            "Actions of redelivered plans not enacted again: their first record was replayed.",
            registry=registry,
        )
        self.ready = Gauge(
            "asi_optimiser_ready", "1 while the worker is consuming plans.", registry=registry
        )
        self.paused = Gauge(
            "asi_optimiser_paused",
            "1 while an operator's pause is in force (every action SKIPPED).",
            registry=registry,
        )
        self.paused_since = Gauge(
            "asi_optimiser_paused_since_timestamp_seconds",
            "When the pause in force was issued (Unix time); 0 while not paused.",
            registry=registry,
        )
        self.queue_messages = Gauge(
            "asi_optimiser_queue_messages",
            "Messages ready in the namespace's queues (plans, review, invalid, dead), polled.",
            ["queue"],
            registry=registry,
        )
        self.queue_consumers = Gauge(
            "asi_optimiser_queue_consumers",
            "Consumers of the namespace's queues, polled.",
            ["queue"],
            registry=registry,
        )
        self.plan_duration = Histogram(
            "asi_optimiser_plan_duration_seconds",
            "From delivery of a plan to its ack, records confirmed.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
