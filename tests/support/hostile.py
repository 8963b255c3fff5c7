"""A hostile planner and a subsystem that keeps score, shared by the hostile-planner test and
``python -m bench.hostile`` (which measures what such a planner gets done in ten seconds).

The planner invents a module name for every action, so that no guard keyed on module names
can stop it: it swings the cycle's one detector threshold up and down by as much as it may ask,
hot-swaps module after module, raises a budget by the most it may, and keeps asking a module
whose budget subsystem always fails. Its threshold swings go up twice as often as down, so
that, unguarded, the threshold climbs to its ceiling on the way.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from schemas.commands import (
    BudgetChange,
    IncreaseBudget,
    SubsystemCommand,
    SwapChange,
    SwapModule,
    ThresholdChange,
    TuneThreshold,
)
from tests.support.subsystems import EveryVerb
from worker.core.ports import SubsystemResult

#: The module whose budget subsystem always fails.
BROKEN = "broken.module"
_modules = itertools.count()


def hostile_plan(plan_id: str, *, broken_first: bool = False) -> dict[str, object]:
    """Ten actions: threshold swings, swaps and budget raises, each on a fresh module name."""
    fresh = lambda: f"fresh.{next(_modules)}"  # noqa: E731
    actions: list[dict[str, object]] = []
    broken = [("INCREASE_BUDGET", BROKEN, {"budget_factor": "1.5"})] * 3
    swings = [
        ("TUNE_THRESHOLD", fresh(), {"suggested_delta": "1.0"}),
        ("TUNE_THRESHOLD", fresh(), {"suggested_delta": "-0.5"}),
        ("HOT_SWAP_MODULE", fresh(), {"target_version": f"v{next(_modules)}"}),
        ("HOT_SWAP_MODULE", fresh(), {"target_version": f"v{next(_modules)}"}),
        ("INCREASE_BUDGET", "search", {"budget_factor": "4"}),
        ("TUNE_THRESHOLD", fresh(), {"suggested_delta": "1.0"}),
        ("TUNE_THRESHOLD", fresh(), {"suggested_delta": "1.0"}),
    ]
    chosen = broken + swings if broken_first else [*swings, broken[0], *swings[:2]]
    for i, (kind, module, parameters) in enumerate(chosen):
        actions.append(
            {
                "action_id": f"{plan_id}-{i}",
                "module_name": module,
                "action_kind": kind,
                "parameters": parameters,
            }
        )
    return {"plan_id": plan_id, "actions": actions}


@dataclass
class Scoreboard(EveryVerb):
    """Detector, budgets and orchestrator with real state, and a log of what reached them."""

    threshold_ms: float = 200.0
    budgets: dict[str, float] = field(default_factory=dict)
    thresholds: list[tuple[float, float, float]] = field(default_factory=list)  # (t, old, new)
    swaps: list[str] = field(default_factory=list)  # modules, in order
    calls: dict[str, int] = field(default_factory=dict)  # action_id -> times applied
    broken_attempts: int = 0

    def _applied(self, action_id: str) -> None:
        self.calls[action_id] = self.calls.get(action_id, 0) + 1

    async def tune(self, command: SubsystemCommand, request: TuneThreshold) -> SubsystemResult:
        self._applied(command.action_id)
        old = self.threshold_ms
        new = min(request.ceiling_ms, max(request.floor_ms, old * (1 + request.delta)))
        self.threshold_ms = new
        self.thresholds.append((time.monotonic(), old, new))
        change = ThresholdChange(old_ms=old, new_ms=new)
        return SubsystemResult(True, f"{old:.0f}->{new:.0f}ms", change)

    async def increase(self, command: SubsystemCommand, request: IncreaseBudget) -> SubsystemResult:
        self._applied(command.action_id)
        if command.module == BROKEN:
            self.broken_attempts += 1
            raise RuntimeError("the budget store is down")
        old = self.budgets.get(command.module, request.default_s)
        new = min(request.ceiling_s, old * request.factor)
        self.budgets[command.module] = new
        change = BudgetChange(old_s=old, new_s=new)
        return SubsystemResult(True, f"{old:.2f}->{new:.2f}s", change)

    async def shed(self, command: SubsystemCommand) -> SubsystemResult:
        self._applied(command.action_id)
        return SubsystemResult(True, "shed")

    async def swap(self, command: SubsystemCommand, request: SwapModule) -> SubsystemResult:
        self._applied(command.action_id)
        self.swaps.append(command.module)
        return SubsystemResult(
            True, "swapped", SwapChange(outcome="SUCCESS", version=request.target_version)
        )

    def reversals(self) -> int:
        """Changes of the threshold that went the other way from the change before."""
        ups = [new > old for _, old, new in self.thresholds if new != old]
        return sum(1 for a, b in itertools.pairwise(ups) if a != b)

    def summary(self) -> str:
        values = [200.0] + [new for _, _, new in self.thresholds]
        return (
            f"threshold changed {len(self.thresholds)} times, range {min(values):.0f}.."
            f"{max(values):.0f} ms (x{max(values) / min(values):.1f}), {self.reversals()} "
            f"reversals; {len(self.swaps)} modules hot-swapped; "
            f"{self.broken_attempts} attempts on the broken module; "
            f"{len(self.calls)} changes in all"
        )
