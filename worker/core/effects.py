"""What an action would change, known before anything is dispatched.

Guardrails key on the setting an action moves, not on the name of the module the planner wrote:
in the seed's world the whole cycle has one detector threshold, so a TUNE_THRESHOLD names the
same setting whatever its ``module_name`` says, and a fresh module name is no way around a
cool-down or a bound. By default (``detector_scope = "cycle"``):

=================  ==================================  =====================================
kind               setting                             move
=================  ==================================  =====================================
TUNE_THRESHOLD     ``detector.p95_threshold_ms``        × (1 + suggested_delta)
INCREASE_BUDGET    ``budget_s[<module>]``               × budget_factor
HOT_SWAP_MODULE    ``version[<module>]``                to target_version
REDUCE_LOAD        ``load_shed[<module>]``              switched on
FLAG_FOR_REVIEW    ``review[<module>]``                 an item for people
NO_OP              none                                 nothing
=================  ==================================  =====================================

With ``detector_scope = "module"`` each module has its own threshold,
``detector.p95_threshold_ms[<module>]``. The module knows nothing of AMQP.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from schemas import ActionKind, ImprovementAction
from worker.core.config import OptimiserConfig
from worker.core.errors import ParameterError
from worker.core.parameters import budget_request, load_request, swap_request, tuning_request
from worker.core.ports import BudgetIncrease, LoadShed, ModuleSwap, ThresholdTuning

Request = ThresholdTuning | BudgetIncrease | LoadShed | ModuleSwap

DETECTOR_THRESHOLD: Final = "detector.p95_threshold_ms"
#: Kinds that change the system (what the change budget counts and the breaker watches).
CHANGES: Final = frozenset(
    {
        ActionKind.TUNE_THRESHOLD,
        ActionKind.INCREASE_BUDGET,
        ActionKind.REDUCE_LOAD,
        ActionKind.HOT_SWAP_MODULE,
    }
)
#: Kinds that move a numeric setting by a factor (an effect's ``factor``).
SCALES: Final = frozenset({ActionKind.TUNE_THRESHOLD, ActionKind.INCREASE_BUDGET})


def setting_of(action: ImprovementAction, config: OptimiserConfig) -> str:
    """The name of the setting ``action`` moves ("" for NO_OP)."""
    module = action.module_name
    match action.action_kind:
        case ActionKind.TUNE_THRESHOLD:
            if config.detector_scope == "module":
                return f"{DETECTOR_THRESHOLD}[{module}]"
            return DETECTOR_THRESHOLD
        case ActionKind.INCREASE_BUDGET:
            return f"budget_s[{module}]"
        case ActionKind.HOT_SWAP_MODULE:
            return f"version[{module}]"
        case ActionKind.REDUCE_LOAD:
            return f"load_shed[{module}]"
        case ActionKind.FLAG_FOR_REVIEW:
            return f"review[{module}]"
    return ""


@dataclass(frozen=True, slots=True)
class Effect:
    """One action's effect: the setting it moves and the request that would move it.

    ``factor`` is the relative move asked of a numeric setting (a threshold's ``1 + delta``, a
    budget's factor), ``target`` the version a swap asks for. ``error`` holds a parameter that
    does not read: the action FAILS when it reaches dispatch, where the seed read parameters.
    ``guard`` and ``note`` say which guardrail trimmed the move, and how.
    """

    action: ImprovementAction
    setting: str
    request: Request | None = None
    factor: float | None = None
    target: str | None = None
    error: ParameterError | None = None
    guard: str = ""
    note: str = ""

    def scaled(self, factor: float, *, guard: str, note: str) -> Effect:
        """The same effect, moving its numeric setting by ``factor`` instead."""
        request = self.request
        if isinstance(request, ThresholdTuning):
            request = dataclasses.replace(request, delta=factor - 1.0)
        elif isinstance(request, BudgetIncrease):
            request = dataclasses.replace(request, factor=factor)
        else:  # pragma: no cover - only numeric settings have a factor
            raise TypeError(f"{type(request).__name__} has no factor to scale")
        return dataclasses.replace(self, request=request, factor=factor, guard=guard, note=note)

    def marked(self, *, guard: str, note: str) -> Effect:
        """The same effect, with a guardrail's note (a breaker's trial, say)."""
        return dataclasses.replace(self, guard=guard, note=note)


def effect_of(action: ImprovementAction, config: OptimiserConfig) -> Effect:
    """Read ``action``'s parameters into the request its subsystem would get."""
    setting = setting_of(action, config)
    try:
        match action.action_kind:
            case ActionKind.TUNE_THRESHOLD:
                tuning = tuning_request(action, config)
                return Effect(action, setting, tuning, factor=1.0 + tuning.delta)
            case ActionKind.INCREASE_BUDGET:
                increase = budget_request(action, config)
                return Effect(action, setting, increase, factor=increase.factor)
            case ActionKind.HOT_SWAP_MODULE:
                swap = swap_request(action)
                return Effect(action, setting, swap, target=swap.target_version)
            case ActionKind.REDUCE_LOAD:
                return Effect(action, setting, load_request(action))
    except ParameterError as exc:
        return Effect(action, setting, error=exc)
    return Effect(action, setting)
