"""In-process adapters for the seed's duck-typed objects, so the seed's usage works as written.

``cognitive_cycle`` is anything with some of ``_detector_config`` (has
``latency_p95_threshold_ms``), ``_budget_map`` (module -> seconds) and ``_load_shedder``
(has ``shed(module)``, sync or async). ``orchestrator`` has ``orchestrate_swap(request)``
returning something with ``outcome`` (``SUCCESS`` or another name) and ``detail``.
A missing attribute makes the action SKIPPED, as in the seed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec

from schemas import ImprovementAction
from schemas.commands import (
    Arguments,
    BudgetChange,
    IncreaseBudget,
    LoadChange,
    ShedLoad,
    Subsystem,
    SubsystemCommand,
    SwapChange,
    SwapModule,
    ThresholdChange,
    TuneThreshold,
)
from worker.core.errors import SubsystemUnavailable
from worker.core.parameters import bounded, clamp_note
from worker.core.ports import Port, SubsystemResult, Subsystems

#: Who asks the orchestrator for a swap.
REQUESTER: Final = "self_optimiser"
#: Loads a module's code given the action's ``artifact_ref``.
ArtifactLoader = Callable[[str], Awaitable[bytes]]


@dataclasses.dataclass(frozen=True, slots=True)
class DetectorConfig:
    """The weakness detector's thresholds, as the seed's CognitiveCycle holds them."""

    latency_p95_threshold_ms: float = 200.0
    latency_p99_threshold_ms: float = 500.0
    error_rate_threshold: float = 0.05


@dataclasses.dataclass(frozen=True, slots=True)
class OrchestratorRequest:
    """What ``orchestrate_swap`` receives.

    ``new_code`` is loaded from ``artifact_ref`` when the adapter has a loader; otherwise it is
    ``None`` and the orchestrator fetches the artifact itself (never an empty placeholder).
    """

    module_id: str
    new_version: str
    artifact_ref: str | None
    new_code: bytes | None
    requester: str
    action_id: str


class CycleDetector:
    """TUNE_THRESHOLD on ``cycle._detector_config``: the config object is replaced, not mutated."""

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle

    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        request = _expect(command, TuneThreshold)
        config = getattr(self._cycle, "_detector_config", None)
        if config is None:
            raise SubsystemUnavailable("no detector_config available on cycle")
        old = float(config.latency_p95_threshold_ms)
        wanted = old * (1 + request.delta)
        new = bounded(wanted, request.floor_ms, request.ceiling_ms)
        self._cycle._detector_config = _replace_p95(config, new)
        note = clamp_note(wanted, request.floor_ms, request.ceiling_ms, "ms")
        return SubsystemResult(
            succeeded=True,
            detail=f"p95_threshold adjusted to {new:.1f}ms (was {old:.1f}ms){note}",
            change=ThresholdChange(old_ms=old, new_ms=new),
        )


class CycleBudget:
    """INCREASE_BUDGET on ``cycle._budget_map[module]``."""

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle

    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        request = _expect(command, IncreaseBudget)
        budgets = getattr(self._cycle, "_budget_map", None)
        if budgets is None:
            raise SubsystemUnavailable("no budget_map on cycle")
        old = float(budgets.get(command.module, request.default_s))
        wanted = old * request.factor
        new = bounded(wanted, request.floor_s, request.ceiling_s)
        budgets[command.module] = new
        note = clamp_note(wanted, request.floor_s, request.ceiling_s, "s")
        return SubsystemResult(
            succeeded=True,
            detail=f"budget {old:.2f}→{new:.2f}{note}",
            change=BudgetChange(old_s=old, new_s=new),
        )


class CycleLoad:
    """REDUCE_LOAD through ``cycle._load_shedder.shed(module)``."""

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle

    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        _expect(command, ShedLoad)
        shedder = getattr(self._cycle, "_load_shedder", None)
        if shedder is None:
            raise SubsystemUnavailable("no load_shedder on cycle")
        outcome = shedder.shed(command.module)
        if inspect.isawaitable(outcome):
            await outcome
        return SubsystemResult(succeeded=True, detail="load-shed signal sent", change=LoadChange())


class OrchestratorSwap:
    """HOT_SWAP_MODULE through ``orchestrator.orchestrate_swap(OrchestratorRequest)``."""

    def __init__(self, orchestrator: Any, *, artifact_loader: ArtifactLoader | None = None) -> None:
        self._orchestrator = orchestrator
        self._load_artifact = artifact_loader

    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        request = _expect(command, SwapModule)
        code = None
        if self._load_artifact is not None and request.artifact_ref is not None:
            code = await self._load_artifact(request.artifact_ref)
        result = await self._orchestrator.orchestrate_swap(
            OrchestratorRequest(
                module_id=command.module,
                new_version=request.target_version,
                artifact_ref=request.artifact_ref,
                new_code=code,
                requester=REQUESTER,
                action_id=command.action_id,
            )
        )
        outcome = str(getattr(result.outcome, "name", result.outcome))
        return SubsystemResult(
            succeeded=outcome == "SUCCESS",
            detail=f"orchestrator: {outcome} — {result.detail}",
            change=SwapChange(outcome=outcome[:64], version=request.target_version),
        )


def seed_subsystems(
    cognitive_cycle: Any = None,
    orchestrator: Any = None,
    *,
    artifact_loader: ArtifactLoader | None = None,
) -> Subsystems:
    """The ports for the seed's ``cognitive_cycle`` and ``orchestrator`` (either may be None)."""
    ports: dict[Subsystem, Port] = {}
    if cognitive_cycle is not None:
        ports[Subsystem.DETECTOR] = CycleDetector(cognitive_cycle)
        ports[Subsystem.BUDGET] = CycleBudget(cognitive_cycle)
        ports[Subsystem.LOAD] = CycleLoad(cognitive_cycle)
    if orchestrator is not None:
        ports[Subsystem.ORCHESTRATOR] = OrchestratorSwap(
            orchestrator, artifact_loader=artifact_loader
        )
    return Subsystems(ports)


def _replace_p95(config: Any, p95_ms: float) -> Any:
    """A copy of ``config`` with a new p95 threshold, whatever kind of record it is."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.replace(config, latency_p95_threshold_ms=p95_ms)
    if isinstance(config, msgspec.Struct):
        return msgspec.structs.replace(config, latency_p95_threshold_ms=p95_ms)
    if hasattr(config, "_replace"):  # a NamedTuple
        return config._replace(latency_p95_threshold_ms=p95_ms)
    # The seed's way: build the same type from the three known thresholds.
    return type(config)(
        latency_p95_threshold_ms=p95_ms,
        latency_p99_threshold_ms=config.latency_p99_threshold_ms,
        error_rate_threshold=config.error_rate_threshold,
    )


class QueueReviewSink:
    """Puts review items on an ``asyncio.Queue``, as the seed's alert queue.

    A bounded queue that is full refuses the item (the action FAILS) rather than
    blocking the optimiser's lock until an operator drains it.
    """

    def __init__(self, queue: asyncio.Queue[ImprovementAction] | None = None) -> None:
        self.queue: asyncio.Queue[ImprovementAction] = (
            queue if queue is not None else asyncio.Queue()
        )

    async def submit(
        self,
        action: ImprovementAction,
        *,
        plan_id: str,
        proceed: Callable[[], bool] | None = None,
    ) -> None:
        try:
            self.queue.put_nowait(action)
        except asyncio.QueueFull:
            raise RuntimeError(
                f"review queue is full ({self.queue.maxsize} items waiting)"
            ) from None


A = TypeVar("A", bound=Arguments)


def _expect(command: SubsystemCommand, kind: type[A]) -> A:
    """The command's arguments, if they are of this port's verb."""
    arguments = command.arguments
    if not isinstance(arguments, kind):
        raise SubsystemUnavailable(f"{type(arguments).__name__} is not for this subsystem")
    return arguments
