"""The per-plan step, free of I/O: what a plan's actions come to, given what was enacted before.

For a decoded plan: the actions whose ``action_id`` is remembered are not enacted again (their
first record comes back marked ``replay``); the others go to ``enact()``; those beyond
``max_enactments_per_cycle`` get a SKIPPED record each; the records come out in the plan's order.
As h11's connection does for HTTP, this step only decides: the plan handler
(``worker.amqp.plans``) reads the delivery, fences, publishes the records and settles the
delivery. It knows nothing of AMQP.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from schemas import EnactmentRecord, EnactmentStatus, ImprovementAction, Plan
from worker.core.clock import Clock
from worker.core.guards import CYCLE_CAP
from worker.core.memory import RecordMemory
from worker.core.metrics import OptimiserMetrics
from worker.core.optimiser import AsyncSelfOptimiser


class PlanStep:
    """Turns one plan into its records (see the module docstring)."""

    def __init__(
        self,
        optimiser: AsyncSelfOptimiser,
        memory: RecordMemory,
        *,
        clock: Clock,
        metrics: OptimiserMetrics | None = None,
    ) -> None:
        self.optimiser = optimiser
        self.memory = memory
        self._clock = clock
        self._metrics = metrics

    async def run(
        self, plan: Plan, *, owned: Callable[[], bool] | None = None
    ) -> list[EnactmentRecord]:
        """One record per action, in the plan's order; ``replay`` marks those enacted before.

        ``owned`` says whether the plan is still this worker's (its delivery not lost); once it
        is not, no further action is enacted, and those actions get no record here: whoever
        the broker gives the plan to next enacts them.
        """
        memory = self.memory
        # The originals first: if the stream cannot give them back now, nothing is enacted
        # and the plan can simply come again.
        originals = await memory.recall(a.action_id for a in plan.actions if a.action_id in memory)
        fresh = [a for a in plan.actions if a.action_id not in originals]
        by_id: dict[str, EnactmentRecord] = {}
        if fresh:
            enacted = await self.optimiser.enact(fresh, plan_id=plan.plan_id, proceed=owned)
            if owned is None or owned():
                enacted += self._beyond_cap(plan.plan_id, fresh[len(enacted) :])
            for record in enacted:
                memory.remember(record)
                by_id[record.action.action_id] = record
        records = []
        for action in plan.actions:
            own = by_id.get(action.action_id)
            if own is None:
                original = originals.get(action.action_id)
                if original is None:  # not looked at: the plan stopped being ours
                    continue
                own = msgspec.structs.replace(original, replay=True)
            records.append(own)
        return records

    def _beyond_cap(self, plan_id: str, actions: list[ImprovementAction]) -> list[EnactmentRecord]:
        """SKIPPED records for the actions ``enact()`` did not look at, so each leaves a trace."""
        cap = self.optimiser.config.max_enactments_per_cycle
        now = self._clock.now()
        skipped = [
            EnactmentRecord(
                plan_id=plan_id,
                action=action,
                status=EnactmentStatus.SKIPPED,
                detail=f"not enacted: max_enactments_per_cycle is {cap}",
                attempted_at=now,
                guard=CYCLE_CAP,
            )
            for action in actions
        ]
        if self._metrics is not None:
            for record in skipped:
                self._metrics.observe(record, dispatched=False)
                self._metrics.refused(CYCLE_CAP)
        return skipped
