"""Commands from the worker to the subsystems that own each kind of change, and their replies.

A command travels on topic exchange ``N.commands`` with routing key ``<subsystem>.<verb>``
(``detector.tune``, ``budget.increase``, ``load.shed``, ``orchestrator.swap``) and asks for a
reply on RabbitMQ's direct reply-to. ``action_id`` is the idempotency key: a subsystem that has
already applied it answers with its first reply and applies nothing. ``deadline`` is when the
worker stops waiting; a subsystem must not apply a command after it (reply REJECTED instead),
so a late change never happens behind a FAILED record.

Versioned: ``version`` is 1; a later version adds fields with defaults.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final

from msgspec import Meta

from schemas.messages import Detail, Identifier, Message, ModuleName, UtcTime

COMMAND_VERSION: Final = 1
Finite = Annotated[float, Meta(ge=-1e12, le=1e12)]
Positive = Annotated[float, Meta(gt=0, le=1e12)]
Version = Annotated[str, Meta(min_length=1, max_length=128)]


class Subsystem(enum.StrEnum):
    """Who owns a kind of change; the first word of a command's routing key."""

    DETECTOR = "detector"
    BUDGET = "budget"
    LOAD = "load"
    ORCHESTRATOR = "orchestrator"


class TuneThreshold(Message, frozen=True, kw_only=True, tag="tune", tag_field="verb"):
    """Scale the p95 latency threshold by ``1 + delta``, held within floor and ceiling (ms)."""

    delta: Annotated[float, Meta(gt=-1, le=1e6)]
    floor_ms: Positive
    ceiling_ms: Positive


class IncreaseBudget(Message, frozen=True, kw_only=True, tag="increase", tag_field="verb"):
    """Multiply a module's time budget by ``factor``, held within floor and ceiling (s)."""

    factor: Positive
    default_s: Positive
    floor_s: Positive
    ceiling_s: Positive


class ShedLoad(Message, frozen=True, kw_only=True, tag="shed", tag_field="verb"):
    """Take pressure off a module."""


class SwapModule(Message, frozen=True, kw_only=True, tag="swap", tag_field="verb"):
    """Hot-swap a module to ``target_version``; ``artifact_ref`` says where its code is."""

    target_version: Version
    artifact_ref: Annotated[str, Meta(max_length=1024)] | None = None


Arguments = TuneThreshold | IncreaseBudget | ShedLoad | SwapModule

#: The subsystem that owns each verb.
OWNER: Final[dict[type[Message], Subsystem]] = {
    TuneThreshold: Subsystem.DETECTOR,
    IncreaseBudget: Subsystem.BUDGET,
    ShedLoad: Subsystem.LOAD,
    SwapModule: Subsystem.ORCHESTRATOR,
}


class SubsystemCommand(Message, frozen=True, kw_only=True):
    """One change for one subsystem; ``arguments.verb`` says which."""

    version: int = COMMAND_VERSION
    action_id: Identifier
    plan_id: Annotated[str, Meta(max_length=128)] = ""
    module: ModuleName
    arguments: Arguments
    issued_at: UtcTime
    deadline: UtcTime


def command_routing_key(command: SubsystemCommand) -> str:
    """``<subsystem>.<verb>``, for example ``detector.tune``."""
    arguments = command.arguments
    return f"{OWNER[type(arguments)].value}.{type(arguments).__struct_config__.tag}"


class ReplyOutcome(enum.StrEnum):
    """How a subsystem answered."""

    SUCCESS = "SUCCESS"  # the change was made
    FAILED = "FAILED"  # it was tried and did not take
    REJECTED = "REJECTED"  # not tried: expired, not understood, or nothing to act on


class ThresholdChange(Message, frozen=True, kw_only=True, tag="threshold", tag_field="kind"):
    old_ms: Finite
    new_ms: Finite


class BudgetChange(Message, frozen=True, kw_only=True, tag="budget", tag_field="kind"):
    old_s: Finite
    new_s: Finite


class LoadChange(Message, frozen=True, kw_only=True, tag="load", tag_field="kind"):
    signalled: bool = True


class SwapChange(Message, frozen=True, kw_only=True, tag="swap", tag_field="kind"):
    outcome: Annotated[str, Meta(max_length=64)]
    version: Version


Change = ThresholdChange | BudgetChange | LoadChange | SwapChange


class SubsystemReply(Message, frozen=True, kw_only=True):
    """A subsystem's answer to one command; ``change`` says what it changed, when it did."""

    version: int = COMMAND_VERSION
    action_id: Identifier
    outcome: ReplyOutcome
    detail: Detail = ""
    change: Change | None = None
    #: The action id was applied before: this is that first reply again, and nothing was done.
    repeat: bool = False
