"""The wire names of one namespace ``N``: every queue and exchange the worker, its tools, the
planner and ReflectionCycle share (``worker.amqp.topology`` declares them)."""

from __future__ import annotations

from dataclasses import dataclass

#: Defaults shared by the worker's settings and anyone declaring the topology (tests, tools).
DELIVERY_LIMIT = 10
RETENTION_S = 86_400


@dataclass(frozen=True, slots=True)
class Names:
    """Every wire name of one namespace."""

    namespace: str

    @property
    def plans_exchange(self) -> str:
        """Fanout exchange the planner publishes plans to (any routing key)."""
        return f"{self.namespace}.plans"

    @property
    def plans_queue(self) -> str:
        """Queue the worker consumes plans from, bound to the plans exchange."""
        return f"{self.namespace}.plans"

    @property
    def results_exchange(self) -> str:
        """Topic exchange of records, routing key ``<ACTION_KIND>.<STATUS>.<module_name>``."""
        return f"{self.namespace}.results"

    @property
    def commands_exchange(self) -> str:
        """Topic exchange of subsystem commands, routing key ``<subsystem>.<verb>``."""
        return f"{self.namespace}.commands"

    def command_queue(self, subsystem: str) -> str:
        """A subsystem server's queue; it exists only while the server runs."""
        return f"{self.namespace}.commands.{subsystem}"

    def tail_queue(self, token: str) -> str:
        """A temporary queue of ``self-optimiser tail`` or ``publish`` following the records."""
        return f"{self.namespace}.tail.{token}"

    @property
    def watched(self) -> dict[str, str]:
        """The queues people watch, by a short label (metrics, ``status``)."""
        return {
            "plans": self.plans_queue,
            "review": self.review_queue,
            "invalid": self.invalid_queue,
            "dead": self.dead_queue,
        }

    @property
    def queues(self) -> tuple[str, ...]:
        """Every durable queue of the namespace (command queues come and go with servers)."""
        return (
            self.plans_queue, self.review_queue, self.invalid_queue, self.results_log,
            self.checkpoints, self.dead_queue, self.control,
        )  # fmt: skip

    @property
    def exchanges(self) -> tuple[str, ...]:
        """Every exchange of the namespace."""
        return (
            self.plans_exchange, self.results_exchange, self.commands_exchange,
            self.dead_exchange, self.review_exchange, self.invalid_exchange, self.markers,
            self.notes, self.checkpoints, self.control,
        )  # fmt: skip

    @property
    def results_log(self) -> str:
        """Stream of every record, a message per group of plans (through ``notes``): the
        guardrail state."""
        return f"{self.namespace}.results.log"

    @property
    def checkpoints(self) -> str:
        """Fanout exchange and stream of checkpoints of the state log (``worker.amqp.checkpoints``):
        what a restart reads instead of every record of the window."""
        return f"{self.namespace}.checkpoints"

    @property
    def dead_exchange(self) -> str:
        """Where ``N.plans`` dead-letters a plan past its delivery limit."""
        return f"{self.namespace}.plans.dead"

    @property
    def dead_queue(self) -> str:
        """Plans delivered too many times without an ack (they crashed a worker, say)."""
        return f"{self.namespace}.plans.dead"

    @property
    def review_queue(self) -> str:
        """Durable queue of FLAG_FOR_REVIEW actions, for operators."""
        return f"{self.namespace}.review"

    @property
    def review_exchange(self) -> str:
        """Fanout exchange in front of the review queue (the worker publishes there)."""
        return f"{self.namespace}.review"

    @property
    def invalid_queue(self) -> str:
        """Durable queue of plans that could not be read, with the reason in a header."""
        return f"{self.namespace}.plans.invalid"

    @property
    def invalid_exchange(self) -> str:
        """Fanout exchange in front of the invalid-plans queue."""
        return f"{self.namespace}.plans.invalid"

    @property
    def control(self) -> str:
        """Fanout exchange and stream of pause/resume messages: the kill switch's state."""
        return f"{self.namespace}.control"

    @property
    def markers(self) -> str:
        """Fanout exchange into both streams: a marker read back means "caught up"."""
        return f"{self.namespace}.markers"

    @property
    def notes(self) -> str:
        """Fanout exchange into the state log for what the worker writes there: the records of
        each group of plans, in one message, and when it flagged an action for review
        (written before the item)."""
        return f"{self.namespace}.notes"
