"""The dispatcher: the call to the subsystem that owns an admitted action, and every way it
can end made into that action's record (it never raises for a failing subsystem)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from schemas import (
    MAX_DETAIL_LENGTH,
    ActionKind,
    EnactmentRecord,
    EnactmentStatus,
    ImprovementAction,
)
from schemas.commands import Change, SubsystemCommand
from worker.core.clock import Clock
from worker.core.config import OptimiserConfig
from worker.core.effects import Effect
from worker.core.errors import ParameterError, PlanLost, SubsystemUnavailable
from worker.core.metrics import OptimiserMetrics
from worker.core.ports import ReviewSink, SubsystemResult, Subsystems
from worker.core.verbs import OWNER_NAMES, VERBS

log = logging.getLogger(__name__)

# Enum attribute lookups cost a Python-level call; the hot path (and the optimiser's) uses these.
SUCCESS = EnactmentStatus.SUCCESS
FAILED = EnactmentStatus.FAILED
SKIPPED = EnactmentStatus.SKIPPED
RATE_LIMITED = EnactmentStatus.RATE_LIMITED
NO_OP = ActionKind.NO_OP
HOT_SWAP_MODULE = ActionKind.HOT_SWAP_MODULE
FLAG_FOR_REVIEW = ActionKind.FLAG_FOR_REVIEW


@dataclass(frozen=True, slots=True)
class Dispatcher:
    """Calls the owner of each admitted action: a subsystem port, or the review sink."""

    subsystems: Subsystems
    review: ReviewSink
    clock: Clock
    metrics: OptimiserMetrics | None

    async def dispatch(
        self,
        effect: Effect,
        cfg: OptimiserConfig,
        plan_id: str,
        proceed: Callable[[], bool] | None = None,
    ) -> EnactmentRecord:
        attempted_at = self.clock.now()
        t0 = self.clock.monotonic()
        action = effect.action
        kind = action.action_kind
        change: Change | None = None
        if cfg.dry_run:
            status, detail = SKIPPED, f"dry-run: would enact {kind.value}"
        elif kind is NO_OP:
            status, detail = SKIPPED, "no-op"
        else:
            status, detail, change = await self._apply(effect, cfg, plan_id, proceed)
        if effect.note:
            detail = f"{detail}; {effect.note}"
        if status is FAILED:
            log.warning(
                "action %s (%s on %s) failed: %s", action.action_id, kind.value,
                action.module_name, detail,
            )  # fmt: skip
        old, new = (None, None)
        if status is SUCCESS and change is not None:
            old, new = VERBS[kind].values(change)
        return EnactmentRecord(
            plan_id=plan_id,
            action=action,
            status=status,
            detail=detail[:MAX_DETAIL_LENGTH],
            duration_s=max(0.0, self.clock.monotonic() - t0),
            attempted_at=attempted_at,
            setting=effect.setting,
            old=old,
            new=new,
            guard=effect.guard,
        )

    async def _apply(
        self,
        effect: Effect,
        cfg: OptimiserConfig,
        plan_id: str,
        proceed: Callable[[], bool] | None,
    ) -> tuple[EnactmentStatus, str, Change | None]:
        """Call the subsystem that owns the action; every outcome becomes a status and a detail
        (but ``PlanLost``: no outcome at all)."""
        action = effect.action
        try:
            owner, call = self._prepare(effect, cfg, plan_id, proceed)
        except ParameterError as exc:
            return FAILED, str(exc), None
        except SubsystemUnavailable as exc:
            return SKIPPED, str(exc), None
        answer: object
        # The review sink is no subsystem: it bounds its own wait for the broker.
        limit = None if action.action_kind is FLAG_FOR_REVIEW else cfg.subsystem_timeout_s
        try:
            async with asyncio.timeout(limit):
                answer = await call
        except SubsystemUnavailable as exc:
            return SKIPPED, str(exc), None
        except PlanLost:
            raise
        except TimeoutError:
            answer = SubsystemResult(
                False, f"{owner} did not answer within {cfg.subsystem_timeout_s:g}s"
            )
        except Exception as exc:
            answer = SubsystemResult(False, f"{owner} raised {type(exc).__name__}: {exc}")
        # A duck-typed port may answer anything; enact() must still not raise.
        result = (
            answer
            if isinstance(answer, SubsystemResult)
            else SubsystemResult(False, f"{owner} answered {type(answer).__name__}, not a result")
        )
        if action.action_kind is HOT_SWAP_MODULE and self.metrics is not None:
            self.metrics.hot_swap(action.module_name, result.succeeded)
        return (SUCCESS if result.succeeded else FAILED), result.detail, result.change

    def _prepare(
        self,
        effect: Effect,
        cfg: OptimiserConfig,
        plan_id: str,
        proceed: Callable[[], bool] | None,
    ) -> tuple[str, Awaitable[SubsystemResult]]:
        """The owner's name and the call to await; raises before anything is touched.

        As in the seed, parameters are read before the subsystem is looked for.
        """
        if effect.error is not None:
            raise effect.error
        action = effect.action
        if action.action_kind is FLAG_FOR_REVIEW:
            return "review queue", self._submit_review(action, plan_id, proceed)
        owner = VERBS[action.action_kind].owner
        arguments = effect.arguments
        assert owner is not None, f"{action.action_kind} has no owner"
        assert arguments is not None, "an effect without an error has its arguments"
        name, missing = OWNER_NAMES[owner]
        port = self.subsystems.get(owner)
        if port is None:
            raise SubsystemUnavailable(missing)
        now = self.clock.now()
        command = SubsystemCommand(
            action_id=action.action_id,
            plan_id=plan_id[:128],
            module=action.module_name,
            arguments=arguments,
            issued_at=now,
            deadline=now + timedelta(seconds=cfg.subsystem_timeout_s),
        )
        return name, port.apply(command)

    async def _submit_review(
        self, action: ImprovementAction, plan_id: str, proceed: Callable[[], bool] | None
    ) -> SubsystemResult:
        if proceed is None:  # a sink of an embedder's may not know the argument
            await self.review.submit(action, plan_id=plan_id)
        else:
            await self.review.submit(action, plan_id=plan_id, proceed=proceed)
        return SubsystemResult(True, "queued for review")
