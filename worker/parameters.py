"""Turning an action's string parameters into bounded, typed subsystem requests.

Parameters arrive as ``str -> str``. A value that is not a finite number, or lies outside the
configured range, raises ``ParameterError`` with a sentence naming the parameter, the value and
the range; the optimiser turns that into a FAILED record. Unknown parameters are ignored, so a
newer planner can send more than this worker reads.
"""

from __future__ import annotations

import math

from schemas import ImprovementAction
from worker.errors import ParameterError
from worker.guardrails import OptimiserConfig
from worker.ports import BudgetIncrease, LoadShed, ModuleSwap, ThresholdTuning

SUGGESTED_DELTA = "suggested_delta"
BUDGET_FACTOR = "budget_factor"
TARGET_VERSION = "target_version"
ARTIFACT_REF = "artifact_ref"
#: The seed's version when an action names none: the orchestrator picks.
DEFAULT_TARGET_VERSION = "auto"


def number(
    parameters: dict[str, str], name: str, *, default: float, low: float, high: float
) -> float:
    """Read a finite number in ``[low, high]`` from ``parameters[name]`` (``default`` if absent)."""
    raw = parameters.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ParameterError(f"parameter {name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ParameterError(f"parameter {name}={raw!r} is not a finite number")
    if not low <= value <= high:
        raise ParameterError(f"parameter {name}={raw!r} is out of range [{low:g}, {high:g}]")
    return value


def tuning_request(action: ImprovementAction, config: OptimiserConfig) -> ThresholdTuning:
    """The TUNE_THRESHOLD request for ``action``."""
    delta = number(
        action.parameters,
        SUGGESTED_DELTA,
        default=config.default_suggested_delta,
        low=config.min_suggested_delta,
        high=config.max_suggested_delta,
    )
    return ThresholdTuning(
        action_id=action.action_id,
        module=action.module_name,
        delta=delta,
        floor_ms=config.threshold_floor_ms,
        ceiling_ms=config.threshold_ceiling_ms,
    )


def budget_request(action: ImprovementAction, config: OptimiserConfig) -> BudgetIncrease:
    """The INCREASE_BUDGET request for ``action``."""
    factor = number(
        action.parameters,
        BUDGET_FACTOR,
        default=config.default_budget_factor,
        low=config.min_budget_factor,
        high=config.max_budget_factor,
    )
    return BudgetIncrease(
        action_id=action.action_id,
        module=action.module_name,
        factor=factor,
        default_s=config.default_budget_s,
        floor_s=config.budget_floor_s,
        ceiling_s=config.budget_ceiling_s,
    )


def load_request(action: ImprovementAction) -> LoadShed:
    """The REDUCE_LOAD request for ``action``."""
    return LoadShed(action_id=action.action_id, module=action.module_name)


def swap_request(action: ImprovementAction) -> ModuleSwap:
    """The HOT_SWAP_MODULE request for ``action``: target version and artifact reference."""
    version = action.parameters.get(TARGET_VERSION, DEFAULT_TARGET_VERSION).strip()
    if not version or len(version) > 128:
        raise ParameterError(f"parameter {TARGET_VERSION}={version!r} must be 1 to 128 characters")
    artifact = action.parameters.get(ARTIFACT_REF, "").strip() or None
    return ModuleSwap(
        action_id=action.action_id,
        module=action.module_name,
        target_version=version,
        artifact_ref=artifact,
    )


def bounded(value: float, floor: float, ceiling: float) -> float:
    """``value`` moved into ``[floor, ceiling]``."""
    return min(ceiling, max(floor, value))


def clamp_note(unbounded: float, floor: float, ceiling: float, unit: str) -> str:
    """A suffix saying that a value was held at its floor or ceiling ('' when it was not)."""
    if unbounded < floor:
        return f" (held at floor {floor:g}{unit})"
    if unbounded > ceiling:
        return f" (held at ceiling {ceiling:g}{unit})"
    return ""
