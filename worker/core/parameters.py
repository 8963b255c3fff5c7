"""Turning an action's string parameters into bounded, typed subsystem requests.

Parameters arrive as ``str -> str``. A number is read in JSON's number grammar (ASCII digits,
no spaces, no ``_``: not Python's ``float()``, which takes ``" 0.2\n"``, ``0.0_5`` and other
scripts' digits) and must be finite and in range. Each kind knows its parameter names: an
unknown one (``budget_factr``) is an error, not the default enacted in its place. Any of
these raises ``ParameterError`` with a sentence naming the parameter, the value and what was
expected; the optimiser turns that into a FAILED record.
"""

from __future__ import annotations

import math
import re
from typing import Final

from schemas import ActionKind, ImprovementAction
from worker.core.config import OptimiserConfig
from worker.core.errors import ParameterError
from worker.core.ports import BudgetIncrease, LoadShed, ModuleSwap, ThresholdTuning

SUGGESTED_DELTA = "suggested_delta"
BUDGET_FACTOR = "budget_factor"
TARGET_VERSION = "target_version"
ARTIFACT_REF = "artifact_ref"
#: The seed's version when an action names none: the orchestrator picks.
DEFAULT_TARGET_VERSION = "auto"
#: The parameters each kind reads. FLAG_FOR_REVIEW and NO_OP read none and take any: a
#: review item's parameters are for the person who reads it.
KNOWN: Final[dict[ActionKind, frozenset[str]]] = {
    ActionKind.TUNE_THRESHOLD: frozenset({SUGGESTED_DELTA}),
    ActionKind.INCREASE_BUDGET: frozenset({BUDGET_FACTOR}),
    ActionKind.REDUCE_LOAD: frozenset(),
    ActionKind.HOT_SWAP_MODULE: frozenset({TARGET_VERSION, ARTIFACT_REF}),
}
#: RFC 8259's number, and nothing else (``re.ASCII``: ``\d`` would take other scripts' digits).
_JSON_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def known_names(action: ImprovementAction) -> None:
    """Raise ``ParameterError`` if ``action`` carries a parameter its kind does not read."""
    known = KNOWN.get(action.action_kind)
    if known is None:
        return
    unknown = sorted(set(action.parameters) - known)
    if unknown:
        expected = ", ".join(sorted(known)) if known else "none"
        raise ParameterError(
            f"unknown parameter {unknown[0]!r} for {action.action_kind.value} "
            f"(it reads: {expected})"
        )


def text(parameters: dict[str, str], name: str, *, default: str, most: int) -> str:
    """A parameter handed on to a subsystem, without its outer spaces: no control characters
    (an escape sequence or a newline would reach the subsystem's logs), at most ``most``."""
    raw = parameters.get(name, default)
    if _CONTROL.search(raw):
        raise ParameterError(f"parameter {name}={raw!r} holds a control character")
    value = raw.strip()
    if not value or len(value) > most:
        raise ParameterError(f"parameter {name}={raw!r} must be 1 to {most} characters")
    return value


def number(
    parameters: dict[str, str], name: str, *, default: float, low: float, high: float
) -> float:
    """Read a finite number in ``[low, high]`` from ``parameters[name]`` (``default`` if absent)."""
    raw = parameters.get(name)
    if raw is None:
        return default
    if _JSON_NUMBER.fullmatch(raw) is None:
        raise ParameterError(f"parameter {name}={raw!r} is not a number (JSON's number grammar)")
    value = float(raw)
    if not math.isfinite(value):
        raise ParameterError(f"parameter {name}={raw!r} is not a finite number")
    if not low <= value <= high:
        raise ParameterError(f"parameter {name}={raw!r} is out of range [{low:g}, {high:g}]")
    return value


def tuning_request(action: ImprovementAction, config: OptimiserConfig) -> ThresholdTuning:
    """The TUNE_THRESHOLD request for ``action``."""
    known_names(action)
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
    known_names(action)
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
    known_names(action)
    return LoadShed(action_id=action.action_id, module=action.module_name)


def swap_request(action: ImprovementAction) -> ModuleSwap:
    """The HOT_SWAP_MODULE request for ``action``: target version and artifact reference."""
    known_names(action)
    version = text(action.parameters, TARGET_VERSION, default=DEFAULT_TARGET_VERSION, most=128)
    artifact = None
    if action.parameters.get(ARTIFACT_REF, "").strip():
        artifact = text(action.parameters, ARTIFACT_REF, default="", most=1024)
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
