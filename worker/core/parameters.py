"""Reading an action's string parameters: numbers and texts, bounded (``worker.core.verbs``
says which parameters each kind reads, into which command's arguments).

Parameters arrive as ``str -> str``. A number is read in JSON's number grammar (ASCII digits,
no spaces, no ``_``: not Python's ``float()``, which takes ``" 0.2\n"``, ``0.0_5`` and other
scripts' digits) and must be finite and in range. Any of these raises ``ParameterError`` with a
sentence naming the parameter, the value and what was expected; the optimiser turns that into a
FAILED record.
"""

from __future__ import annotations

import math
import re
from typing import Final, NamedTuple

from worker.core.errors import ParameterError

SUGGESTED_DELTA = "suggested_delta"
BUDGET_FACTOR = "budget_factor"
TARGET_VERSION = "target_version"
ARTIFACT_REF = "artifact_ref"
#: The seed's version when an action names none: the orchestrator picks.
DEFAULT_TARGET_VERSION = "auto"
#: RFC 8259's number, and nothing else (``re.ASCII``: ``\d`` would take other scripts' digits).
_JSON_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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


class Allowed(NamedTuple):
    """What a numeric parameter may be: its default (when absent) and its range."""

    default: float
    low: float
    high: float


def number(parameters: dict[str, str], name: str, allowed: Allowed) -> float:
    """Read a finite number in ``allowed``'s range from ``parameters[name]`` (its default if
    absent)."""
    default, low, high = allowed
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
