"""The optimiser: enacts ``ImprovementAction``s on their subsystems, under guardrails.

``enact()`` looks at the actions in order and, for each, applies the gates in this order:

0. pause: while paused (``pause()``, the operators' kill switch) -> SKIPPED "paused: <reason>",
   checked before each action, so a pause also stops the rest of a plan;
1. cap: once ``max_enactments_per_cycle`` records exist, the rest are not looked at;
2. cool-down: a (module, kind) that succeeded less than ``cool_down_s`` ago -> RATE_LIMITED;
3. hot-swap cap: HOT_SWAP_MODULE beyond ``max_hot_swap_per_cycle`` in this call -> SKIPPED;
4. dry-run: SKIPPED, no subsystem touched;
5. dispatch by kind: SUCCESS (arms the cool-down), FAILED, or SKIPPED.

It never raises for a bad action or a failing subsystem: each gives a record. One
``asyncio.Lock`` serialises whole calls. The module knows nothing of AMQP.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from schemas import (
    MAX_DETAIL_LENGTH,
    ActionKind,
    EnactmentRecord,
    EnactmentStatus,
    ImprovementAction,
)
from worker.clock import Clock, SystemClock
from worker.errors import ConfigError, ParameterError, SubsystemUnavailable
from worker.guardrails import OptimiserConfig
from worker.inprocess import seed_subsystems
from worker.metrics import OptimiserMetrics
from worker.parameters import budget_request, load_request, swap_request, tuning_request
from worker.ports import QueueReviewSink, ReviewSink, SubsystemResult, Subsystems

__all__ = ["AsyncSelfOptimiser", "NullOptimiser", "OptimiserConfig", "SelfOptimiser"]

log = logging.getLogger(__name__)

SUCCESS = EnactmentStatus.SUCCESS
FAILED = EnactmentStatus.FAILED
SKIPPED = EnactmentStatus.SKIPPED
RATE_LIMITED = EnactmentStatus.RATE_LIMITED
# Enum attribute lookups cost a Python-level call; the hot path uses these names.
NO_OP = ActionKind.NO_OP
HOT_SWAP_MODULE = ActionKind.HOT_SWAP_MODULE


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
    ``cognitive_cycle`` (wrapped by ``worker.inprocess``) and an ``alert_queue`` for
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
        # (module, kind) -> monotonic time of its last SUCCESS. Absent means never, so a
        # young host clock cannot rate-limit a first action (the reference's .get(key, 0.0) did).
        self._last_enacted: dict[tuple[str, ActionKind], float] = {}
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
    ) -> list[EnactmentRecord]:
        """Enact ``actions`` in order; return one record per action looked at (see module doc)."""
        cfg = config or self._cfg
        clock = self._clock
        metrics = self._metrics
        records: list[EnactmentRecord] = []
        hot_swap_count = 0
        async with self._lock:
            for action in actions:
                dispatched = False
                if (paused := self._paused) is not None:
                    record = self._gate_record(plan_id, action, SKIPPED, f"paused: {paused}")
                    self._count(record, metrics, dispatched)
                    records.append(record)
                    continue
                if len(records) >= cfg.max_enactments_per_cycle:
                    break
                kind = action.action_kind
                key = (action.module_name, kind)
                if cfg.enable_rate_limit and (last := self._last_enacted.get(key)) is not None:
                    remaining = cfg.cool_down_s - (clock.monotonic() - last)
                    if remaining > 0:
                        record = self._gate_record(
                            plan_id,
                            action,
                            RATE_LIMITED,
                            f"cool-down active ({cfg.cool_down_s}s, {remaining:.1f}s left)",
                        )
                        self._count(record, metrics, dispatched)
                        records.append(record)
                        continue
                if kind is HOT_SWAP_MODULE:
                    if hot_swap_count >= cfg.max_hot_swap_per_cycle:
                        record = self._gate_record(
                            plan_id, action, SKIPPED, "hot-swap cap reached for this cycle"
                        )
                        self._count(record, metrics, dispatched)
                        records.append(record)
                        continue
                    hot_swap_count += 1
                record = await self._dispatch(action, cfg, plan_id)
                dispatched = True
                if record.status is SUCCESS:
                    self._last_enacted[key] = clock.monotonic()
                self._count(record, metrics, dispatched)
                records.append(record)
            self._stats["enact_calls"] += 1
            if metrics is not None:
                metrics.enact_call()
        return records

    def arm_cool_down(self, module: str, kind: ActionKind, completed_at: datetime) -> None:
        """Remember a SUCCESS that completed at ``completed_at`` (wall clock) elsewhere.

        For state restored after a restart or learned from another replica: the cool-down of
        (module, kind) then runs from that moment, as if this optimiser had enacted it.
        """
        age_s = max(0.0, (self._clock.now() - completed_at).total_seconds())
        at = self._clock.monotonic() - age_s
        key = (module, kind)
        if at > self._last_enacted.get(key, float("-inf")):
            self._last_enacted[key] = at

    async def stats(self) -> dict[str, int]:
        """Counters since the last reset: enacted, failed, skipped, rate_limited, enact_calls."""
        return dict(self._stats)

    async def reset(self) -> None:
        """Forget the counters and every cool-down (waits for a running ``enact()``)."""
        async with self._lock:
            self._stats.clear()
            self._last_enacted.clear()

    # ------------------------------------------------------------------ #
    # Dispatcher                                                          #
    # ------------------------------------------------------------------ #

    async def _dispatch(
        self, action: ImprovementAction, cfg: OptimiserConfig, plan_id: str
    ) -> EnactmentRecord:
        attempted_at = self._clock.now()
        t0 = self._clock.monotonic()
        kind = action.action_kind
        if cfg.dry_run:
            status, detail = SKIPPED, f"dry-run: would enact {kind.value}"
        elif kind is NO_OP:
            status, detail = SKIPPED, "no-op"
        else:
            status, detail = await self._apply(action, cfg, plan_id)
        if status is FAILED:
            log.warning(
                "action %s (%s on %s) failed: %s", action.action_id, kind.value,
                action.module_name, detail,
            )  # fmt: skip
        return EnactmentRecord(
            plan_id=plan_id,
            action=action,
            status=status,
            detail=detail[:MAX_DETAIL_LENGTH],
            duration_s=max(0.0, self._clock.monotonic() - t0),
            attempted_at=attempted_at,
        )

    async def _apply(
        self, action: ImprovementAction, cfg: OptimiserConfig, plan_id: str
    ) -> tuple[EnactmentStatus, str]:
        """Call the subsystem that owns ``action``; every outcome becomes a status and a detail."""
        try:
            owner, call = self._prepare(action, cfg, plan_id)
        except (ParameterError, SubsystemUnavailable) as exc:
            return (FAILED if isinstance(exc, ParameterError) else SKIPPED), str(exc)
        answer: object
        try:
            async with asyncio.timeout(cfg.subsystem_timeout_s):
                answer = await call
        except SubsystemUnavailable as exc:
            return SKIPPED, str(exc)
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
        if action.action_kind is HOT_SWAP_MODULE and self._metrics is not None:
            self._metrics.hot_swap(action.module_name, result.succeeded)
        return (SUCCESS if result.succeeded else FAILED), result.detail

    def _prepare(
        self, action: ImprovementAction, cfg: OptimiserConfig, plan_id: str
    ) -> tuple[str, Awaitable[SubsystemResult]]:
        """The owner's name and the call to await; raises before anything is touched."""
        ports = self._subsystems
        match action.action_kind:
            case ActionKind.TUNE_THRESHOLD:
                tuning = tuning_request(action, cfg)
                if ports.detector is None:
                    raise SubsystemUnavailable("no detector subsystem configured")
                return "detector", ports.detector.tune_threshold(tuning)
            case ActionKind.INCREASE_BUDGET:
                increase = budget_request(action, cfg)
                if ports.budget is None:
                    raise SubsystemUnavailable("no budget subsystem configured")
                return "budget", ports.budget.increase_budget(increase)
            case ActionKind.REDUCE_LOAD:
                if ports.load is None:
                    raise SubsystemUnavailable("no load shedder configured")
                return "load shedder", ports.load.shed_load(load_request(action))
            case ActionKind.HOT_SWAP_MODULE:
                swap = swap_request(action)
                if ports.swap is None:
                    raise SubsystemUnavailable("no orchestrator injected")
                return "orchestrator", ports.swap.hot_swap(swap)
            case ActionKind.FLAG_FOR_REVIEW:
                return "review queue", self._submit_review(action, plan_id)
        raise AssertionError(f"unhandled action kind {action.action_kind!r}")  # pragma: no cover

    async def _submit_review(self, action: ImprovementAction, plan_id: str) -> SubsystemResult:
        await self._review.submit(action, plan_id=plan_id)
        return SubsystemResult(True, "queued for review")

    def _gate_record(
        self, plan_id: str, action: ImprovementAction, status: EnactmentStatus, detail: str
    ) -> EnactmentRecord:
        return EnactmentRecord(
            plan_id=plan_id,
            action=action,
            status=status,
            detail=detail,
            duration_s=0.0,
            attempted_at=self._clock.now(),
        )

    def _count(
        self, record: EnactmentRecord, metrics: OptimiserMetrics | None, dispatched: bool
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
