"""The guardrails, one a file, and ``GUARDS``: the one registry of them, in the order they apply.

The metrics (a refusal series per gate), the docs' gate table (held to it by a test) and the
operators' ``breakers`` command all read it; a new guardrail is its file, its settings in
``OptimiserConfig`` and its place here. ``base`` has the shape every guard has.
"""

from __future__ import annotations

from typing import Final, TypeVar

from worker.core.config import OptimiserConfig
from worker.core.guards.base import LEARNED_FROM, Escalation, Guard, Instant, Refusal
from worker.core.guards.bound import Bound
from worker.core.guards.breaker import Breaker, BreakerView
from worker.core.guards.budgets import ChangeBudget, SwapBudget
from worker.core.guards.cool_down import CoolDown
from worker.core.guards.hot_swap_cap import HotSwapCap
from worker.core.guards.no_change import NoChange
from worker.core.guards.stabilization import Stabilization
from worker.core.guards.tools import factor_moved, setting_moved, span

#: Every guardrail, in the order they apply: the seed's cool-down and hot-swap cap first, as
#: they always were, then the new ones.
GUARDS: Final[tuple[type[Guard], ...]] = (
    CoolDown,
    HotSwapCap,
    NoChange,
    Breaker,
    Stabilization,
    Bound,
    SwapBudget,
    ChangeBudget,
)
#: The two gates ``enact()`` applies itself, before the guards: the operators' pause (it stops
#: the rest of a plan too) and the seed's cap on records per call (it ends the call).
PAUSE: Final = "pause"
CYCLE_CAP: Final = "cycle_cap"
#: Every gate that can refuse an action, by the name its refusals are counted and recorded under.
GATES: Final = (PAUSE, CYCLE_CAP, *(guard.name for guard in GUARDS))

G = TypeVar("G", bound=Guard)


def build_guards() -> list[Guard]:
    """A fresh guard of each kind, in the order they apply."""
    return [guard() for guard in GUARDS]


def state_window_s(config: OptimiserConfig) -> float:
    """How far back the guards' state reaches: what a restart must read again."""
    return max(guard.window_s(config) for guard in build_guards())


def one_of(guards: list[Guard], kind: type[G]) -> G:
    """The guard of class ``kind`` among ``guards`` (each is there once)."""
    return next(guard for guard in guards if isinstance(guard, kind))


__all__ = [
    "CYCLE_CAP",
    "GATES",
    "GUARDS",
    "LEARNED_FROM",
    "PAUSE",
    "Bound",
    "Breaker",
    "BreakerView",
    "ChangeBudget",
    "CoolDown",
    "Escalation",
    "Guard",
    "HotSwapCap",
    "Instant",
    "NoChange",
    "Refusal",
    "Stabilization",
    "SwapBudget",
    "build_guards",
    "factor_moved",
    "one_of",
    "setting_moved",
    "span",
    "state_window_s",
]  # fmt: skip
