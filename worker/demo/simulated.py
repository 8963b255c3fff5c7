"""The demo's simulated surroundings, and the loop without a broker (``demo --in-process``).

The optimiser here is the real one; only its surroundings are simulated. Plans carry every
kind of action, now and then a bad parameter, a repeat that runs into the cool-down and a
FLAG_FOR_REVIEW; the orchestrator fails some swaps. Each record is printed as it lands.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from schemas import ActionKind, EnactmentStatus, ImprovementAction, Plan
from worker.core.clock import SystemClock
from worker.core.config import OptimiserConfig
from worker.core.optimiser import AsyncSelfOptimiser
from worker.core.seed import DetectorConfig, OrchestratorRequest
from worker.ops.format import format_record

MODULES: Final = ("cognition.detector", "planning.search", "perception.ingest", "memory.index")
#: How the demo's actions are drawn: kinds that change something come up most.
KIND_WEIGHTS: Final = {
    ActionKind.TUNE_THRESHOLD: 3,
    ActionKind.INCREASE_BUDGET: 3,
    ActionKind.REDUCE_LOAD: 2,
    ActionKind.HOT_SWAP_MODULE: 2,
    ActionKind.FLAG_FOR_REVIEW: 1,
    ActionKind.NO_OP: 1,
}


class SwapOutcome(enum.Enum):
    SUCCESS = "SUCCESS"
    ROLLED_BACK = "ROLLED_BACK"


@dataclass(frozen=True)
class SwapResult:
    outcome: SwapOutcome
    detail: str


class SimulatedLoadShedder:
    """Counts the shed signals it gets, per module."""

    def __init__(self) -> None:
        self.signals: Counter[str] = Counter()

    async def shed(self, module: str) -> None:
        self.signals[module] += 1


@dataclass
class SimulatedCycle:
    """A CognitiveCycle with the three attributes the seed's optimiser acts on."""

    _detector_config: DetectorConfig = field(default_factory=DetectorConfig)
    _budget_map: dict[str, float] = field(default_factory=dict)
    _load_shedder: SimulatedLoadShedder = field(default_factory=SimulatedLoadShedder)


class SimulatedOrchestrator:
    """A LiveModuleOrchestrator whose swaps fail (and roll back) now and then."""

    def __init__(self, rng: random.Random, failure_rate: float = 0.3) -> None:
        self._rng = rng
        self._failure_rate = failure_rate
        self.versions: dict[str, str] = {}

    async def orchestrate_swap(self, request: OrchestratorRequest) -> SwapResult:
        await asyncio.sleep(0.01)
        if self._rng.random() < self._failure_rate:
            return SwapResult(SwapOutcome.ROLLED_BACK, "health check failed after swap")
        self.versions[request.module_id] = request.new_version
        return SwapResult(SwapOutcome.SUCCESS, f"now at {request.new_version}")


class SimulatedPlanner:
    """Proposes plans the way a planner under pressure does: mostly sound, sometimes not."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._plans = 0
        self._last: ImprovementAction | None = None

    def next_plan(self) -> Plan:
        self._plans += 1
        actions = [self._action(i) for i in range(self._rng.randint(1, 5))]
        return Plan(plan_id=f"demo-plan-{self._plans}", actions=actions, planner="demo")

    def _action(self, index: int) -> ImprovementAction:
        rng = self._rng
        action_id = f"demo-{self._plans}-{index}"
        if self._last is not None and rng.random() < 0.2:
            # The same change again, soon after: the cool-down should refuse it.
            kind, module = self._last.action_kind, self._last.module_name
        else:
            kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
            module = rng.choice(MODULES)
        parameters: dict[str, str] = {}
        if kind is ActionKind.TUNE_THRESHOLD:
            parameters["suggested_delta"] = rng.choice(["0.1", "-0.2", "0.3", "lots"])
        elif kind is ActionKind.INCREASE_BUDGET:
            parameters["budget_factor"] = rng.choice(["1.2", "1.5", "2", "9"])
        elif kind is ActionKind.HOT_SWAP_MODULE:
            parameters["target_version"] = f"1.{rng.randint(0, 9)}.{rng.randint(0, 9)}"
        action = ImprovementAction(
            action_id=action_id,
            module_name=module,
            action_kind=kind,
            parameters=parameters,
            priority=rng.randint(0, 10),
            rationale="simulated",
        )
        self._last = action
        return action


@dataclass
class DemoReport:
    """What the demo did, for its summary and for tests."""

    plans: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    review_items: int = 0
    parked: int = 0
    final_threshold_ms: float = 0.0
    final_budgets: dict[str, float] = field(default_factory=dict)

    def counts(self) -> str:
        """``SUCCESS 3, FAILED 1, ...``: every status, in the schema's order."""
        return ", ".join(f"{s.value} {self.statuses[s.value]}" for s in EnactmentStatus)


async def run_demo(
    *,
    duration_s: float,
    dry_run: bool = False,
    interval_s: float = 0.25,
    seed: int | None = None,
    out: Callable[[str], None] = print,
) -> DemoReport:
    """Run the loop for ``duration_s`` seconds; print every record through ``out``."""
    rng = random.Random(seed)
    cycle = SimulatedCycle()
    alerts: asyncio.Queue[ImprovementAction] = asyncio.Queue()
    optimiser = AsyncSelfOptimiser(
        SimulatedOrchestrator(rng),
        cycle,
        alerts,
        OptimiserConfig(cool_down_s=2.0, dry_run=dry_run, max_hot_swap_per_cycle=1),
        clock=SystemClock(),
    )
    planner = SimulatedPlanner(rng)
    report = DemoReport()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration_s
    mode = "dry-run: nothing is enacted" if dry_run else "enacting"
    out(f"self-optimiser demo, in-process, {duration_s:g}s, {mode} (cool-down 2s)")
    while loop.time() < deadline:
        plan = planner.next_plan()
        records = await optimiser.enact(plan.actions, plan_id=plan.plan_id)
        report.plans += 1
        out(f"-- {plan.plan_id}: {len(plan.actions)} actions")
        for record in records:
            report.statuses[record.status.value] += 1
            out("   " + format_record(record))
        while not alerts.empty():
            flagged = alerts.get_nowait()
            report.review_items += 1
            out(f"   review queue <- {flagged.action_id} ({flagged.module_name})")
        budgets = ", ".join(f"{m}={b:.2f}s" for m, b in sorted(cycle._budget_map.items()))
        out(
            f"   state: p95 threshold {cycle._detector_config.latency_p95_threshold_ms:.1f}ms;"
            f" budgets {budgets or '(defaults)'}"
        )
        await asyncio.sleep(min(interval_s, max(0.0, deadline - loop.time())))
    report.final_threshold_ms = cycle._detector_config.latency_p95_threshold_ms
    report.final_budgets = dict(cycle._budget_map)
    out(f"done: {report.plans} plans; {report.counts()}; {report.review_items} sent for review")
    return report
