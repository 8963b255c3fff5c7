"""The subsystems the optimiser acts on, as ports.

Each port takes one typed request and answers with a ``SubsystemResult``. An adapter raises
``SubsystemUnavailable`` when it has nothing to act on (the action is SKIPPED); any other
exception, a timeout or ``succeeded=False`` makes the action FAILED. Requests carry the
action's ``action_id`` so a remote subsystem can drop a duplicate.

In-process adapters for the seed's duck-typed objects live in ``worker.core.seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from schemas import ImprovementAction
from schemas.commands import Change


@dataclass(frozen=True, slots=True)
class ThresholdTuning:
    """Scale a detector's p95 latency threshold by ``1 + delta``, kept within floor and ceiling."""

    action_id: str
    module: str
    delta: float
    floor_ms: float
    ceiling_ms: float


@dataclass(frozen=True, slots=True)
class BudgetIncrease:
    """Multiply a module's time budget by ``factor``, kept within floor and ceiling.

    ``default_s`` is the budget of a module that has none yet.
    """

    action_id: str
    module: str
    factor: float
    default_s: float
    floor_s: float
    ceiling_s: float


@dataclass(frozen=True, slots=True)
class LoadShed:
    """Ask the load shedder to take pressure off a module."""

    action_id: str
    module: str


@dataclass(frozen=True, slots=True)
class ModuleSwap:
    """Hot-swap a module to ``target_version``; ``artifact_ref`` says where its code is."""

    action_id: str
    module: str
    target_version: str
    artifact_ref: str | None
    requester: str = "self_optimiser"


@dataclass(frozen=True, slots=True)
class SubsystemResult:
    """A subsystem's answer: whether the change took, a line saying so, and what changed."""

    succeeded: bool
    detail: str
    change: Change | None = None


class DetectorPort(Protocol):
    """Owns the weakness detector's thresholds (TUNE_THRESHOLD)."""

    async def tune_threshold(self, request: ThresholdTuning) -> SubsystemResult: ...


class BudgetPort(Protocol):
    """Owns the modules' time budgets (INCREASE_BUDGET)."""

    async def increase_budget(self, request: BudgetIncrease) -> SubsystemResult: ...


class LoadPort(Protocol):
    """Owns load shedding (REDUCE_LOAD)."""

    async def shed_load(self, request: LoadShed) -> SubsystemResult: ...


class SwapPort(Protocol):
    """Owns live module replacement (HOT_SWAP_MODULE)."""

    async def hot_swap(self, request: ModuleSwap) -> SubsystemResult: ...


class ReviewSink(Protocol):
    """Where FLAG_FOR_REVIEW actions go for operators; raising means the item was not taken.

    ``proceed`` says whether the plan is still this worker's; a sink that cannot make the
    item idempotent at its reader asks it before the item goes out, and raises ``PlanLost``
    when it says no.
    """

    async def submit(
        self,
        action: ImprovementAction,
        *,
        plan_id: str,
        proceed: Callable[[], bool] | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Subsystems:
    """The ports an optimiser acts through; a missing one makes its kind SKIPPED."""

    detector: DetectorPort | None = None
    budget: BudgetPort | None = None
    load: LoadPort | None = None
    swap: SwapPort | None = None
