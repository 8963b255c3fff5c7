"""What an action would change, known before anything is dispatched.

Guardrails key on the setting an action moves (``worker.core.verbs`` says which, for each
kind), not on the name of the module the planner wrote: in the seed's world the whole cycle has
one detector threshold, so a TUNE_THRESHOLD names the same setting whatever its
``module_name`` says, and a fresh module name is no way around a cool-down or a bound. The
module knows nothing of AMQP.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from schemas import ImprovementAction
from schemas.commands import Arguments
from worker.core.config import OptimiserConfig
from worker.core.errors import ParameterError
from worker.core.verbs import CHANGES, SCALES, VERBS, Verb

__all__ = ["CHANGES", "SCALES", "Effect", "effect_of", "setting_of"]


def setting_of(action: ImprovementAction, config: OptimiserConfig) -> str:
    """The name of the setting ``action`` moves ("" for NO_OP)."""
    return VERBS[action.action_kind].setting(action.module_name, config)


@dataclass(frozen=True, slots=True)
class Effect:
    """One action's effect: the setting it moves and the arguments its owner would get.

    ``factor`` is the relative move asked of a numeric setting (a threshold's ``1 + delta``, a
    budget's factor), ``target`` the version a swap asks for. ``error`` holds a parameter that
    does not read: the action FAILS when it reaches dispatch, where the seed read parameters.
    ``guard`` and ``note`` say which guardrail trimmed the move, and how.
    """

    action: ImprovementAction
    setting: str
    arguments: Arguments | None = None
    factor: float | None = None
    target: str | None = None
    error: ParameterError | None = None
    guard: str = ""
    note: str = ""

    def scaled(self, factor: float, *, guard: str, note: str) -> Effect:
        """The same effect, moving its numeric setting by ``factor`` instead."""
        scaled = VERBS[self.action.action_kind].scaled
        if scaled is None or self.arguments is None:  # pragma: no cover - numeric settings only
            raise TypeError(f"{self.action.action_kind} has no factor to scale")
        arguments = scaled(self.arguments, factor)
        return dataclasses.replace(self, arguments=arguments, factor=factor, guard=guard, note=note)

    def marked(self, *, guard: str, note: str) -> Effect:
        """The same effect, with a guardrail's note (a breaker's trial, say)."""
        return dataclasses.replace(self, guard=guard, note=note)


def effect_of(action: ImprovementAction, config: OptimiserConfig) -> Effect:
    """Read ``action``'s parameters into the arguments its owner would get."""
    verb = VERBS[action.action_kind]
    setting = verb.setting(action.module_name, config)
    if verb.read is None:
        return Effect(action, setting)
    try:
        _known_names(action, verb)
        arguments = verb.read(action.parameters, config)
    except ParameterError as exc:
        return Effect(action, setting, error=exc)
    return Effect(
        action,
        setting,
        arguments,
        factor=None if verb.factor is None else verb.factor(arguments),
        target=None if verb.target is None else verb.target(arguments),
    )


def _known_names(action: ImprovementAction, verb: Verb[Arguments]) -> None:
    """Raise ``ParameterError`` if ``action`` carries a parameter its kind does not read: an
    unknown one (``budget_factr``) is an error, not the default enacted in its place."""
    known = verb.parameters
    if known is None:
        return
    unknown = sorted(set(action.parameters) - known)
    if unknown:
        expected = ", ".join(sorted(known)) if known else "none"
        raise ParameterError(
            f"unknown parameter {unknown[0]!r} for {action.action_kind.value} "
            f"(it reads: {expected})"
        )
