"""Plan decoding: msgspec against ``json.loads`` + the same validation by hand, and pydantic v2.

All three apply the rules of ``schemas.messages`` and return equal ``Plan`` objects; the
benchmark checks that before it times anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from bench.stats import Measurement, alternate

try:
    import pydantic
    from pydantic import AwareDatetime, Field, StringConstraints
except ImportError:  # pydantic is a bench-only extra; without it that candidate is left out
    pydantic = None  # type: ignore[assignment]
from schemas import MAX_ACTIONS_PER_PLAN, ActionKind, ImprovementAction, Plan, decode_plan, encode

PLANS = 2_000
ACTIONS_PER_PLAN = 10

_IDENTIFIER = re.compile(r"^[!-~]+$")
_MODULE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]*$")
_KINDS = {kind.value: kind for kind in ActionKind}


class Invalid(ValueError):
    pass


def _string(
    value: Any, path: str, *, low: int = 0, high: int, pattern: re.Pattern[str] | None = None
) -> str:
    if not isinstance(value, str):
        raise Invalid(f"Expected `str`, got `{type(value).__name__}` - at `{path}`")
    if not low <= len(value) <= high:
        raise Invalid(f"Expected `str` of length {low}..{high} - at `{path}`")
    if pattern is not None and not pattern.match(value):
        raise Invalid(f"Expected `str` matching {pattern.pattern!r} - at `{path}`")
    return value


def _action(raw: Any, path: str) -> ImprovementAction:
    if not isinstance(raw, dict):
        raise Invalid(f"Expected `object` - at `{path}`")
    for required in ("action_id", "module_name", "action_kind"):
        if required not in raw:
            raise Invalid(f"Object missing required field `{required}` - at `{path}`")
    kind = _KINDS.get(raw["action_kind"])
    if kind is None:
        raise Invalid(f"Invalid enum value {raw['action_kind']!r} - at `{path}.action_kind`")
    parameters = raw.get("parameters", {})
    if not isinstance(parameters, dict) or len(parameters) > 32:
        raise Invalid(f"Expected `object` of at most 32 entries - at `{path}.parameters`")
    for key, value in parameters.items():
        _string(key, f"{path}.parameters", low=1, high=64)
        _string(value, f"{path}.parameters[...]", high=1024)
    priority = raw.get("priority", 0)
    if type(priority) is not int or not -(2**31) <= priority <= 2**31 - 1:
        raise Invalid(f"Expected `int` in int32 range - at `{path}.priority`")
    return ImprovementAction(
        action_id=_string(
            raw["action_id"], f"{path}.action_id", low=1, high=128, pattern=_IDENTIFIER
        ),
        module_name=_string(
            raw["module_name"], f"{path}.module_name", low=1, high=128, pattern=_MODULE
        ),
        action_kind=kind,
        parameters=parameters,
        priority=priority,
        rationale=_string(raw.get("rationale", ""), f"{path}.rationale", high=4096),
    )


def decode_by_hand(body: bytes) -> Plan:
    raw = json.loads(body)
    if not isinstance(raw, dict):
        raise Invalid("Expected `object`")
    if "plan_id" not in raw or "actions" not in raw:
        raise Invalid("Object missing required field")
    actions = raw["actions"]
    if not isinstance(actions, list) or not 1 <= len(actions) <= MAX_ACTIONS_PER_PLAN:
        raise Invalid("Expected `array` of 1 to 1000 actions - at `$.actions`")
    parsed = [_action(item, f"$.actions[{i}]") for i, item in enumerate(actions)]
    if len({a.action_id for a in parsed}) != len(parsed):
        raise Invalid("duplicate action_id - at `$.actions`")
    created_at = raw.get("created_at")
    if created_at is not None:
        created_at = datetime.fromisoformat(_string(created_at, "$.created_at", high=64))
        if created_at.tzinfo is None:
            raise Invalid("Expected `datetime` with a timezone - at `$.created_at`")
    return Plan(
        plan_id=_string(raw["plan_id"], "$.plan_id", low=1, high=128, pattern=_IDENTIFIER),
        actions=parsed,
        created_at=created_at,
        planner=_string(raw.get("planner", ""), "$.planner", high=128),
    )


def _pydantic_decoder() -> Callable[[bytes], Plan] | None:
    if pydantic is None:
        return None

    Identifier = Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=_IDENTIFIER.pattern)
    ]

    class PydanticAction(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(frozen=True, extra="ignore")
        action_id: Identifier
        module_name: Annotated[
            str, StringConstraints(min_length=1, max_length=128, pattern=_MODULE.pattern)
        ]
        action_kind: ActionKind
        parameters: Annotated[
            dict[
                Annotated[str, StringConstraints(min_length=1, max_length=64)],
                Annotated[str, StringConstraints(max_length=1024)],
            ],
            Field(max_length=32, default_factory=dict),
        ]
        priority: Annotated[int, Field(ge=-(2**31), le=2**31 - 1, strict=True)] = 0
        rationale: Annotated[str, StringConstraints(max_length=4096)] = ""

    class PydanticPlan(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(frozen=True, extra="ignore")
        plan_id: Identifier
        actions: Annotated[
            list[PydanticAction], Field(min_length=1, max_length=MAX_ACTIONS_PER_PLAN)
        ]
        created_at: AwareDatetime | None = None
        planner: Annotated[str, StringConstraints(max_length=128)] = ""

        @pydantic.model_validator(mode="after")
        def unique_ids(self) -> PydanticPlan:
            if len({a.action_id for a in self.actions}) != len(self.actions):
                raise ValueError("duplicate action_id")
            return self

    def decode(body: bytes) -> Plan:
        model = PydanticPlan.model_validate_json(body)
        return Plan(
            plan_id=model.plan_id,
            actions=[ImprovementAction(**a.model_dump()) for a in model.actions],
            created_at=model.created_at,
            planner=model.planner,
        )

    return decode


def sample_plans(count: int = PLANS, actions: int = ACTIONS_PER_PLAN) -> list[bytes]:
    """Realistic plan bodies: every kind, parameters, rationales, a creation time."""
    kinds = list(ActionKind)
    return [
        encode(
            Plan(
                plan_id=f"plan-{p}",
                planner="bench",
                created_at=datetime.fromisoformat("2026-11-23T12:00:00+00:00"),
                actions=[
                    ImprovementAction(
                        action_id=f"plan-{p}-a{i}",
                        module_name=f"cognition.module_{i}",
                        action_kind=kinds[i % len(kinds)],
                        parameters={"suggested_delta": "0.1", "budget_factor": "1.5"},
                        priority=i,
                        rationale="p95 latency regressed by 12% since the last deploy",
                    )
                    for i in range(actions)
                ],
            )
        )
        for p in range(count)
    ]


def measure(rounds: int) -> list[Measurement]:
    bodies = sample_plans()
    decoders: dict[str, Callable[[bytes], Plan]] = {
        "msgspec (schemas.decode_plan)": decode_plan,
        "json.loads + hand validation": decode_by_hand,
    }
    pydantic_decode = _pydantic_decoder()
    if pydantic_decode is not None:
        decoders["pydantic v2 model_validate_json"] = pydantic_decode
    for name, decode in decoders.items():
        assert decode(bodies[0]) == decode_plan(bodies[0]), f"{name} decodes differently"

    def candidate(decode: Callable[[bytes], Plan]) -> Callable[[], int]:
        def run() -> int:
            for body in bodies:
                decode(body)
            return len(bodies)

        return run

    return alternate(
        {name: candidate(decode) for name, decode in decoders.items()}, rounds=rounds, unit="plans"
    )
