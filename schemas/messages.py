"""The wire contract: the messages the planner, the worker and ReflectionCycle exchange.

Every type here is a frozen msgspec ``Struct``. Incoming messages tolerate unknown fields, so a
newer planner never breaks an older worker; a field added later always has a default. Enums
travel by name. Constraints live in the types (``Meta``) so that a bad message fails at decode
time with an error that names the path (``$.actions[3].action_id``).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Final

import msgspec
from msgspec import Meta

#: Most actions one plan may carry; a bigger batch is a planner bug, not a plan.
MAX_ACTIONS_PER_PLAN: Final = 1000
#: Longest ``detail`` a record carries; longer texts (an exception message) are cut to fit.
MAX_DETAIL_LENGTH: Final = 2000

# Patterns end in `$(?!\n)`: Python's `$` (msgspec uses `re.search`) also matches before a
# final newline, so `"a1\n"` would pass; ECMA's (JSON Schema's) `$` matches at the end only.
# Ids travel as AMQP `message_id`s and in logs: printable ASCII, no spaces, bounded.
Identifier = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[!-~]+$(?!\n)",
        description="Printable ASCII without spaces, 1 to 128 characters.",
    ),
]
# Module names end up as the last words of a results routing key: keep them routable.
ModuleName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]*$(?!\n)",
        description="A module's name: letters, digits and _ . : / -, 1 to 128 characters.",
        examples=["cognition.detector"],
    ),
]
ParameterName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$(?!\n)",
        description="Letters, digits and _ . -, starting with a letter or _.",
    ),
]
# Values reach subsystems (a target version) and people: no control characters (C0, DEL, C1).
ParameterValue = Annotated[
    str,
    Meta(
        max_length=1024,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]*$(?!\n)",
        description="Any text without control characters.",
    ),
]
Parameters = Annotated[
    dict[ParameterName, ParameterValue],
    Meta(max_length=32, description="Free-form string parameters, read by the action's kind."),
]
Priority = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
Rationale = Annotated[str, Meta(max_length=4096)]
Detail = Annotated[str, Meta(max_length=MAX_DETAIL_LENGTH)]
Seconds = Annotated[float, Meta(ge=0.0)]
UtcTime = Annotated[datetime, Meta(tz=True, description="An RFC 3339 time with its offset (UTC).")]
# What an action moves: `detector.p95_threshold_ms`, `budget_s[<module>]`, `version[<module>]`...
SettingName = Annotated[
    str,
    Meta(
        max_length=300,
        description="The setting an action moves, e.g. detector.p95_threshold_ms or "
        "budget_s[<module>]; empty when it moves none.",
    ),
]
SettingValue = Annotated[float, Meta(ge=-1e12, le=1e12)] | Annotated[str, Meta(max_length=128)]
GuardName = Annotated[str, Meta(max_length=64)]


class ActionKind(enum.StrEnum):
    """What an action asks for; each kind is owned by one subsystem."""

    TUNE_THRESHOLD = "TUNE_THRESHOLD"
    INCREASE_BUDGET = "INCREASE_BUDGET"
    REDUCE_LOAD = "REDUCE_LOAD"
    HOT_SWAP_MODULE = "HOT_SWAP_MODULE"
    FLAG_FOR_REVIEW = "FLAG_FOR_REVIEW"
    NO_OP = "NO_OP"


class EnactmentStatus(enum.StrEnum):
    """What happened to one action."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    RATE_LIMITED = "RATE_LIMITED"


class ParkReason(enum.StrEnum):
    """Why the worker parked a plan in ``N.plans.invalid`` unread: its ``x-error-kind`` header."""

    TOO_LARGE = "too_large"
    CONTENT_TYPE = "content_type"
    CONTENT_ENCODING = "content_encoding"
    MALFORMED = "malformed"
    INVALID = "invalid"
    UNREADABLE_PROPERTIES = "unreadable_properties"


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every wire message: immutable, unknown fields ignored.

    Subclasses repeat `frozen=True, kw_only=True`: msgspec does not inherit kw_only, and
    type checkers read each class on its own.
    """


class ImprovementAction(Message, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One change the planner proposes. ``action_id`` is its idempotency key.

    Unlike a plan, an action refuses fields it does not know: a misspelled ``paramters`` would
    otherwise enact the kind's defaults. New fields of a plan stay welcome (forward
    compatibility lives there).
    """

    action_id: Identifier
    module_name: ModuleName
    action_kind: ActionKind
    parameters: Parameters = {}
    priority: Priority = 0
    rationale: Rationale = ""


class Plan(Message, frozen=True, kw_only=True):
    """A ranked batch of actions, enacted in the order given."""

    plan_id: Identifier
    actions: Annotated[list[ImprovementAction], Meta(min_length=1, max_length=MAX_ACTIONS_PER_PLAN)]
    created_at: UtcTime | None = None
    planner: Annotated[str, Meta(max_length=128)] = ""

    def __post_init__(self) -> None:
        # msgspec turns a ValueError raised here into a ValidationError; say where, as it does.
        seen: dict[str, int] = {}
        for index, action in enumerate(self.actions):
            first = seen.setdefault(action.action_id, index)
            if first != index:
                raise ValueError(
                    f"duplicate action_id {action.action_id!r} (first at $.actions[{first}])"
                    f" - at `$.actions[{index}].action_id`"
                )


class EnactmentRecord(Message, frozen=True, kw_only=True):
    """What the optimiser did with one action; one is published per action of a plan.

    ``attempted_at`` is UTC wall-clock time; ``duration_s`` is measured on a monotonic clock.
    ``replay`` marks a record published again for an action enacted before (a redelivered
    plan): nothing was done this time, and the rest of the record is the original.
    ``setting`` is what the action moves (known before it is dispatched); ``old`` and ``new``
    are its values before and after, as the subsystem reported them; ``guard`` names the
    guardrail that refused the action, trimmed it, or let it through as a breaker's trial.
    """

    plan_id: Annotated[str, Meta(max_length=128)] = ""
    action: ImprovementAction
    status: EnactmentStatus
    detail: Detail = ""
    duration_s: Seconds = 0.0
    attempted_at: UtcTime
    replay: bool = False
    setting: SettingName = ""
    old: SettingValue | None = None
    new: SettingValue | None = None
    guard: GuardName = ""


def routing_key(record: EnactmentRecord) -> str:
    """The results routing key of a record: ``<ACTION_KIND>.<STATUS>.<module_name>``."""
    action = record.action
    return f"{action.action_kind.value}.{record.status.value}.{action.module_name}"
