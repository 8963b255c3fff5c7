"""The optimiser: enacts ``ImprovementAction``s on their subsystems, under guardrails.

``enact()`` looks at the actions in order and, for each, applies the gates in this order:

0. pause: while paused (``pause()``, the operators' kill switch) -> SKIPPED "paused: <reason>",
   checked before each action, so a pause also stops the rest of a plan;
1. cap: once ``max_enactments_per_cycle`` records exist, the rest are not looked at;
2. then the guards, in the order of their registry (``worker.core.guards.GUARDS``): the seed's
   cool-down (per setting) and hot-swap cap, then no-change, breaker, stabilization, bound
   (which may trim the move), swap budget and change budget; each refusal is a record with the
   guard's reason;
3. dry-run: SKIPPED, no subsystem touched;
4. dispatch to the kind's owner (``worker.core.dispatch``): SUCCESS, FAILED, or SKIPPED.

Every record goes through one ``learn()`` path, which the state stream uses too; a breaker
that opens sends one review item. It never raises for a bad action or a failing subsystem:
each gives a record. One ``asyncio.Lock`` serialises whole calls. The module knows nothing of
AMQP.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from schemas import (
    MAX_DETAIL_LENGTH,
    ActionKind,
    EnactmentRecord,
    ImprovementAction,
)
from worker.core.clock import Clock, SystemClock
from worker.core.config import OptimiserConfig
from worker.core.dispatch import FAILED, FLAG_FOR_REVIEW, RATE_LIMITED, SKIPPED, SUCCESS, Dispatcher
from worker.core.effects import Effect, effect_of
from worker.core.errors import ConfigError, PlanLost
from worker.core.guards import (
    LEARNED_FROM,
    PAUSE,
    Breaker,
    BreakerView,
    Escalation,
    Guard,
    Instant,
    Refusal,
    build_guards,
    one_of,
)
from worker.core.metrics import OptimiserMetrics
from worker.core.ports import ReviewSink, Subsystems
from worker.core.seed import QueueReviewSink, seed_subsystems

__all__ = ["AsyncSelfOptimiser", "NullOptimiser", "OptimiserConfig", "SelfOptimiser"]

log = logging.getLogger(__name__)


@runtime_checkable
class SelfOptimiser(Protocol):
    """What the worker (or an embedder) needs from an optimiser."""

    async def enact(
        self,
        actions: Sequence[ImprovementAction],
        *,
        config: OptimiserConfig | None = None,
        plan_id: str = "",
    ) -> list[EnactmentRecord]: ...

    async def stats(self) -> dict[str, int]: ...

    async def reset(self) -> None: ...


class NullOptimiser:
    """No-op optimiser — for testing or disabled-enactment mode."""

    async def enact(
        self,
        actions: Sequence[ImprovementAction],
        *,
        config: OptimiserConfig | None = None,
        plan_id: str = "",
    ) -> list[EnactmentRecord]:
        return []

    async def stats(self) -> dict[str, int]:
        return {}

    async def reset(self) -> None:
        pass


class AsyncSelfOptimiser:
    """Routes each action to the subsystem that owns it, under the gates above.

    The first four arguments are the seed's: a duck-typed ``orchestrator`` and
    ``cognitive_cycle`` (wrapped by ``worker.core.seed``) and an ``alert_queue`` for
    FLAG_FOR_REVIEW. Alternatively pass ``subsystems`` (ports, for instance the AMQP ones)
    and a ``review`` sink. ``clock`` and ``metrics`` are injected.
    """

    def __init__(
        self,
        orchestrator: Any = None,
        cognitive_cycle: Any = None,
        alert_queue: asyncio.Queue[ImprovementAction] | None = None,
        config: OptimiserConfig | None = None,
        *,
        subsystems: Subsystems | None = None,
        review: ReviewSink | None = None,
        clock: Clock | None = None,
        metrics: OptimiserMetrics | None = None,
    ) -> None:
        if subsystems is not None and (orchestrator is not None or cognitive_cycle is not None):
            raise ConfigError(
                "pass subsystems= or the seed's orchestrator/cognitive_cycle, not both"
            )
        if review is not None and alert_queue is not None:
            raise ConfigError("pass review= or alert_queue=, not both")
        self._subsystems = subsystems or seed_subsystems(cognitive_cycle, orchestrator)
        self._review: ReviewSink = review or QueueReviewSink(alert_queue)
        self._cfg = config or OptimiserConfig()
        self._clock: Clock = clock or SystemClock()
        self._metrics = metrics
        self._dispatcher = Dispatcher(self._subsystems, self._review, self._clock, metrics)
        self._guards: list[Guard] = build_guards()
        self._admitting = {
            kind: tuple(g for g in self._guards if kind in g.kinds) for kind in ActionKind
        }
        self._breaker = one_of(self._guards, Breaker)
        if metrics is not None:
            metrics.breakers = self._breaker_series
        self._lock = asyncio.Lock()
        self._stats: defaultdict[str, int] = defaultdict(int)
        self._paused: str | None = None

    @property
    def paused(self) -> str | None:
        """The reason given for the pause, or None while actions are enacted."""
        return self._paused

    def pause(self, reason: str) -> None:
        """Enact nothing from the next action on: each is SKIPPED "paused: <reason>"."""
        self._paused = reason or "no reason given"

    def resume(self) -> None:
        """Enact again, from the next action on."""
        self._paused = None

    @property
    def config(self) -> OptimiserConfig:
        """The configuration used when ``enact()`` is given none."""
        return self._cfg

    # ------------------------------------------------------------------ #
    # Public interface                                                    #
    # ------------------------------------------------------------------ #

    async def enact(
        self,
        actions: Sequence[ImprovementAction],
        *,
        config: OptimiserConfig | None = None,
        plan_id: str = "",
        proceed: Callable[[], bool] | None = None,
    ) -> list[EnactmentRecord]:
        """Enact ``actions`` in order; return one record per action looked at (see module doc).

        ``proceed`` is asked before each action: once it says no (the worker no longer owns
        the plan), the rest are not looked at and get no record; nor does an action whose
        effect the review sink held back for that reason (``PlanLost``).
        """
        cfg = config or self._cfg
        metrics = self._metrics
        records: list[EnactmentRecord] = []
        async with self._lock:
            for guard in self._guards:
                guard.begin()
            for action in actions:
                if proceed is not None and not proceed():
                    break
                if (paused := self._paused) is not None:
                    refusal = Refusal(PAUSE, SKIPPED, f"paused: {paused}")
                    record = self._refused(plan_id, action, "", refusal)
                    self._count(record, metrics, dispatched=False)
                    records.append(record)
                    continue
                if len(records) >= cfg.max_enactments_per_cycle:
                    break
                effect = effect_of(action, cfg)
                admitted = self._admit(effect, cfg)
                if isinstance(admitted, Refusal):
                    record = self._refused(plan_id, action, effect.setting, admitted)
                    dispatched = False
                else:
                    try:
                        record = await self._dispatcher.dispatch(admitted, cfg, plan_id, proceed)
                    except PlanLost as lost:
                        log.warning("plan %s: %s", plan_id, lost)
                        break
                    dispatched = True
                self._count(record, metrics, dispatched=dispatched)
                records.append(record)
                for escalation in self._learn(record, self._clock.monotonic(), cfg):
                    await self._escalate(escalation, plan_id)
            self._stats["enact_calls"] += 1
            if metrics is not None:
                metrics.enact_call()
        return records

    def _admit(self, effect: Effect, cfg: OptimiserConfig) -> Effect | Refusal:
        now = self._instant()
        for guard in self._admitting[effect.action.action_kind]:
            admitted = guard.admit(effect, cfg, now)
            if isinstance(admitted, Refusal):
                return admitted
            effect = admitted
        return effect

    def learn(self, record: EnactmentRecord) -> list[Escalation]:
        """Take in a record enacted elsewhere (the state stream: a restart, another replica).

        The same path ``enact()`` takes for its own records, so every guard's state is rebuilt
        exactly; the escalations are returned, not sent (whoever enacted it sent them).
        """
        if record.replay:
            return []
        if self._metrics is not None:
            self._metrics.know(record.action.module_name)
        completed = record.attempted_at + timedelta(seconds=record.duration_s)
        age_s = max(0.0, (self._clock.now() - completed).total_seconds())
        return self._learn(record, self._clock.monotonic() - age_s, self._cfg)

    def _learn(self, record: EnactmentRecord, at: float, cfg: OptimiserConfig) -> list[Escalation]:
        if record.status not in LEARNED_FROM:
            return []  # what no guard learns from: most records, at a busy planner's rate
        escalations = []
        for guard in self._guards:
            escalation = guard.learn(record, at, cfg)
            if escalation is not None:
                escalations.append(escalation)
        return escalations

    async def _escalate(self, escalation: Escalation, plan_id: str) -> None:
        """One review item per opening, with an id made from the record that opened it: a
        redelivered plan that opens it again sends the same id, which readers drop."""
        trigger = escalation.record.action
        digest = hashlib.sha256(
            f"{escalation.guard}/{trigger.module_name}/{trigger.action_kind}/{trigger.action_id}".encode()
        ).hexdigest()[:24]
        item = ImprovementAction(
            action_id=f"{escalation.guard}-{digest}",
            module_name=trigger.module_name,
            action_kind=FLAG_FOR_REVIEW,
            parameters={
                "guard": escalation.guard,
                "action_kind": trigger.action_kind.value,
                "opened_by": trigger.action_id,
            },
            rationale=escalation.detail[:4096],
        )
        try:
            await self._review.submit(item, plan_id=plan_id)
        except Exception as exc:  # the breaker is open either way; say so loudly
            log.error("could not send the review item %s: %s", item.action_id, exc)
        else:
            log.warning("%s", escalation.detail)
        if self._metrics is not None:
            self._metrics.escalated(escalation.guard)

    def reset_breaker(self, module: str, kind: ActionKind, issued_at: datetime) -> None:
        """An operator closed the breaker of (module, kind) at ``issued_at`` (wall clock)."""
        age_s = max(0.0, (self._clock.now() - issued_at).total_seconds())
        self._breaker.close(module, kind, self._clock.monotonic() - age_s)

    def breakers(self) -> list[BreakerView]:
        """The breakers that are open or half-open."""
        return self._breaker.views(self._cfg, self._instant())

    def _breaker_series(self) -> list[tuple[str, str, bool]]:
        # Read by the metrics scrape; a breaker that closed keeps its series, at 0.
        opened = {(view.module, view.action_kind) for view in self.breakers()}
        return [(m, k.value, (m, k) in opened) for m, k in self._breaker.known()]

    @property
    def guards(self) -> Sequence[Guard]:
        """The guards, in the order they apply."""
        return tuple(self._guards)

    def _instant(self) -> Instant:
        return Instant(self._clock.monotonic(), self._clock.now())

    async def stats(self) -> dict[str, int]:
        """Counters since the last reset: enacted, failed, skipped, rate_limited, enact_calls."""
        return dict(self._stats)

    async def reset(self) -> None:
        """Forget the counters and every guard's state, cool-downs included (waits for a
        running ``enact()``)."""
        async with self._lock:
            self._stats.clear()
            for guard in self._guards:
                guard.reset()

    def _refused(
        self, plan_id: str, action: ImprovementAction, setting: str, refusal: Refusal
    ) -> EnactmentRecord:
        if self._metrics is not None:
            self._metrics.refused(refusal.guard)
        return EnactmentRecord(
            plan_id=plan_id,
            action=action,
            status=refusal.status,
            detail=refusal.detail[:MAX_DETAIL_LENGTH],
            duration_s=0.0,
            attempted_at=self._clock.now(),
            setting=setting,
            guard=refusal.guard,
        )

    def _count(
        self, record: EnactmentRecord, metrics: OptimiserMetrics | None, *, dispatched: bool
    ) -> None:
        status = record.status
        if status is SUCCESS:
            self._stats["enacted"] += 1
        elif status is FAILED:
            self._stats["failed"] += 1
        elif status is RATE_LIMITED:
            self._stats["rate_limited"] += 1
        else:
            self._stats["skipped"] += 1
        if metrics is not None:
            metrics.observe(record, dispatched=dispatched)
