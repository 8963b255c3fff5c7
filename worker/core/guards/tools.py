"""The small things the guards share: how far a record says a setting moved, how people say a
window, and when a guard's state is pruned."""

from __future__ import annotations

from typing import Final

from schemas import EnactmentRecord
from worker.core.config import OptimiserConfig
from worker.core.effects import effect_of, setting_of

#: A move closer to 1 than this is no move at all (floating point after a trim).
EPSILON: Final = 1e-9


#: Past this many keys a guard drops the ones whose state has expired (a planner inventing
#: module names must not grow the worker's memory without end).
PRUNE_AT: Final = 10_000


def span(seconds: float) -> str:
    """``600`` -> "10 min", ``45`` -> "45s": how people say a window."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g}s"


def setting_moved(record: EnactmentRecord, config: OptimiserConfig) -> str:
    """The setting a record's action moved (older records do not carry it)."""
    return record.setting or setting_of(record.action, config)


def factor_moved(record: EnactmentRecord, config: OptimiserConfig) -> float | None:
    """How far a SUCCESS moved its numeric setting: new / old as the subsystem reported them,
    else (a subsystem that does not say) the factor the action asked for."""
    old, new = record.old, record.new
    if isinstance(old, float) and isinstance(new, float) and old > 0 and new > 0:
        return new / old
    return effect_of(record.action, config).factor
