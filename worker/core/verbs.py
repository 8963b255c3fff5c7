"""One row per ``ActionKind``: everything the core knows of what a kind does.

A row says which setting the kind moves (what every guardrail keys on, never only the module
name the planner wrote), which command its owner applies (``schemas.commands``: the wire Struct
is the request a port gets, in-process or over AMQP, and ``OWNER`` says whose it is), how the
action's string parameters are read into that command's arguments, how far it moves a numeric
setting or to which version, and what a subsystem's report of the change says old and new were.
What is derived from the table is derived: ``CHANGES``, ``SCALES``, the kinds' parameters.

=================  =============================  ==============================  ==============
kind               setting                        command (owner)                 move
=================  =============================  ==============================  ==============
TUNE_THRESHOLD     ``detector.p95_threshold_ms``  ``TuneThreshold`` (detector)    × (1 + delta)
INCREASE_BUDGET    ``budget_s[<module>]``         ``IncreaseBudget`` (budget)     × factor
HOT_SWAP_MODULE    ``version[<module>]``          ``SwapModule`` (orchestrator)   to a version
REDUCE_LOAD        ``load_shed[<module>]``        ``ShedLoad`` (load)             switched on
FLAG_FOR_REVIEW    ``review[<module>]``           none: the review sink           an item
NO_OP              none                           none                            nothing
=================  =============================  ==============================  ==============

With ``detector_scope = "module"`` each module has its own threshold,
``detector.p95_threshold_ms[<module>]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import msgspec

from schemas import ActionKind
from schemas.commands import (
    OWNER,
    Arguments,
    BudgetChange,
    Change,
    IncreaseBudget,
    LoadChange,
    ShedLoad,
    Subsystem,
    SwapChange,
    SwapModule,
    ThresholdChange,
    TuneThreshold,
)
from schemas.messages import SettingValue
from worker.core.config import OptimiserConfig
from worker.core.parameters import (
    ARTIFACT_REF,
    BUDGET_FACTOR,
    DEFAULT_TARGET_VERSION,
    SUGGESTED_DELTA,
    TARGET_VERSION,
    number,
    text,
)

A = TypeVar("A", bound=Arguments)
Parameters = dict[str, str]
OldNew = tuple[SettingValue | None, SettingValue | None]

DETECTOR_THRESHOLD: Final = "detector.p95_threshold_ms"


def _nothing(_: Change) -> OldNew:
    return None, None


@dataclass(frozen=True, slots=True)
class Verb(Generic[A]):
    """What one kind of action does (see the module docstring)."""

    #: The setting an action of this kind moves, given its module ("" for none).
    setting: Callable[[str, OptimiserConfig], str]
    #: The command its owner applies; None: no subsystem (the review sink, nothing).
    command: type[A] | None = None
    #: Its parameters read into that command's arguments (raises ``ParameterError``).
    read: Callable[[Parameters, OptimiserConfig], A] | None = None
    #: The parameters it reads; None: it takes any (a review item's are for people).
    parameters: frozenset[str] | None = frozenset()
    #: How far its arguments move a numeric setting (new / old), and the arguments that move
    #: it by another factor instead (a guardrail's trim).
    factor: Callable[[A], float] | None = None
    scaled: Callable[[A, float], A] | None = None
    #: The version its arguments move a setting to.
    target: Callable[[A], str] | None = None
    #: What a subsystem's report of the change says the setting was and is now.
    values: Callable[[Change], OldNew] = _nothing

    @property
    def owner(self) -> Subsystem | None:
        """Who applies it; None: no subsystem."""
        return None if self.command is None else OWNER[self.command]


def _threshold_setting(module: str, config: OptimiserConfig) -> str:
    if config.detector_scope == "module":
        return f"{DETECTOR_THRESHOLD}[{module}]"
    return DETECTOR_THRESHOLD


def _tune(parameters: Parameters, config: OptimiserConfig) -> TuneThreshold:
    delta = number(parameters, SUGGESTED_DELTA, config.suggested_delta)
    return TuneThreshold(
        delta=delta, floor_ms=config.threshold_floor_ms, ceiling_ms=config.threshold_ceiling_ms
    )


def _budget(parameters: Parameters, config: OptimiserConfig) -> IncreaseBudget:
    factor = number(parameters, BUDGET_FACTOR, config.budget_factor)
    return IncreaseBudget(
        factor=factor,
        default_s=config.default_budget_s,
        floor_s=config.budget_floor_s,
        ceiling_s=config.budget_ceiling_s,
    )


def _swap(parameters: Parameters, _: OptimiserConfig) -> SwapModule:
    version = text(parameters, TARGET_VERSION, default=DEFAULT_TARGET_VERSION, most=128)
    artifact = None
    if parameters.get(ARTIFACT_REF, "").strip():
        artifact = text(parameters, ARTIFACT_REF, default="", most=1024)
    return SwapModule(target_version=version, artifact_ref=artifact)


def _threshold_values(change: Change) -> OldNew:
    return (change.old_ms, change.new_ms) if isinstance(change, ThresholdChange) else (None, None)


def _budget_values(change: Change) -> OldNew:
    return (change.old_s, change.new_s) if isinstance(change, BudgetChange) else (None, None)


def _load_values(change: Change) -> OldNew:
    if isinstance(change, LoadChange):
        return None, "shedding" if change.signalled else None
    return None, None


def _swap_values(change: Change) -> OldNew:
    return (None, change.version) if isinstance(change, SwapChange) else (None, None)


_TUNE: Final[Verb[TuneThreshold]] = Verb(
    setting=_threshold_setting,
    command=TuneThreshold,
    read=_tune,
    parameters=frozenset({SUGGESTED_DELTA}),
    factor=lambda arguments: 1.0 + arguments.delta,
    scaled=lambda arguments, factor: msgspec.structs.replace(arguments, delta=factor - 1.0),
    values=_threshold_values,
)
_BUDGET: Final[Verb[IncreaseBudget]] = Verb(
    setting=lambda module, _: f"budget_s[{module}]",
    command=IncreaseBudget,
    read=_budget,
    parameters=frozenset({BUDGET_FACTOR}),
    factor=lambda arguments: arguments.factor,
    scaled=lambda arguments, factor: msgspec.structs.replace(arguments, factor=factor),
    values=_budget_values,
)
_SHED: Final[Verb[ShedLoad]] = Verb(
    setting=lambda module, _: f"load_shed[{module}]",
    command=ShedLoad,
    read=lambda _, __: ShedLoad(),
    values=_load_values,
)
_SWAP: Final[Verb[SwapModule]] = Verb(
    setting=lambda module, _: f"version[{module}]",
    command=SwapModule,
    read=_swap,
    parameters=frozenset({TARGET_VERSION, ARTIFACT_REF}),
    target=lambda arguments: arguments.target_version,
    values=_swap_values,
)

VERBS: Final[Mapping[ActionKind, Verb[Any]]] = {
    ActionKind.TUNE_THRESHOLD: _TUNE,
    ActionKind.INCREASE_BUDGET: _BUDGET,
    ActionKind.REDUCE_LOAD: _SHED,
    ActionKind.HOT_SWAP_MODULE: _SWAP,
    ActionKind.FLAG_FOR_REVIEW: Verb(
        setting=lambda module, _: f"review[{module}]", parameters=None
    ),
    ActionKind.NO_OP: Verb(setting=lambda _, __: "", parameters=None),
}

#: Kinds that change the system (what the change budget counts and the breaker watches).
CHANGES: Final = frozenset(kind for kind, verb in VERBS.items() if verb.command is not None)
#: Kinds that move a numeric setting by a factor.
SCALES: Final = frozenset(kind for kind, verb in VERBS.items() if verb.factor is not None)

#: How each owner is named in a record's detail, and what a kind of theirs says without them.
OWNER_NAMES: Final[Mapping[Subsystem, tuple[str, str]]] = {
    Subsystem.DETECTOR: ("detector", "no detector subsystem configured"),
    Subsystem.BUDGET: ("budget", "no budget subsystem configured"),
    Subsystem.LOAD: ("load shedder", "no load shedder configured"),
    Subsystem.ORCHESTRATOR: ("orchestrator", "no orchestrator injected"),
}
