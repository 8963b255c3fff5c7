"""The wire contract: what decodes, what is refused (with the path), and the JSON Schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import msgspec
import pytest

from schemas import (
    MAX_ACTIONS_PER_PLAN,
    ActionKind,
    EnactmentRecord,
    EnactmentStatus,
    ImprovementAction,
    Plan,
    decode_action,
    decode_plan,
    decode_record,
    encode,
    routing_key,
)
from schemas.jsonschema import MESSAGES, SCHEMA_DIR, json_schema, render
from tests.support.factories import EXAMPLE_PLAN_PATH


def _action(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action_id": "a-1",
        "module_name": "cognition.detector",
        "action_kind": "TUNE_THRESHOLD",
        "parameters": {"suggested_delta": "0.1"},
        "priority": 3,
        "rationale": "why",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP: Any = object()


def _plan(**overrides: Any) -> bytes:
    body: dict[str, Any] = {"plan_id": "p-1", "actions": [_action()]}
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not _DROP}).encode()


def test_the_example_plan_decodes() -> None:
    plan = decode_plan(EXAMPLE_PLAN_PATH.read_bytes())
    assert plan.plan_id == "plan-2026-11-23-0001"
    assert {a.action_kind for a in plan.actions} == set(ActionKind)
    assert plan.created_at == datetime(2026, 11, 23, 12, tzinfo=UTC)


def test_defaults_fill_what_a_minimal_action_leaves_out() -> None:
    plan = decode_plan(
        b'{"plan_id":"p","actions":[{"action_id":"a","module_name":"m","action_kind":"NO_OP"}]}'
    )
    [action] = plan.actions
    assert (action.parameters, action.priority, action.rationale) == ({}, 0, "")


def test_unknown_plan_fields_are_tolerated_and_unknown_action_fields_refused() -> None:
    # A newer planner may add to a plan; a misspelled action field would enact the defaults.
    plan = decode_plan(_plan(future_field={"x": 1}))
    assert plan.actions[0].action_id == "a-1"
    with pytest.raises(
        msgspec.ValidationError, match=r"unknown field `paramters` - at `\$.actions\[0\]`"
    ):
        decode_plan(_plan(actions=[_action(paramters={"budget_factor": "1.1"})]))


def test_msgpack_plans_decode_like_json() -> None:
    plan = decode_plan(EXAMPLE_PLAN_PATH.read_bytes())
    as_msgpack = msgspec.msgpack.encode(plan)
    assert decode_plan(as_msgpack, "application/msgpack") == plan


def test_a_record_round_trips_and_routes_by_kind_status_module() -> None:
    record = EnactmentRecord(
        plan_id="p-1",
        action=ImprovementAction(
            action_id="a-1", module_name="memory.index", action_kind=ActionKind.HOT_SWAP_MODULE
        ),
        status=EnactmentStatus.FAILED,
        detail="orchestrator: ROLLED_BACK — health check",
        duration_s=0.5,
        attempted_at=datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC),
    )
    assert decode_record(encode(record)) == record
    assert routing_key(record) == "HOT_SWAP_MODULE.FAILED.memory.index"
    wire = json.loads(encode(record))
    assert wire["status"] == "FAILED"
    assert wire["action"]["action_kind"] == "HOT_SWAP_MODULE"
    assert wire["attempted_at"] == "2026-11-23T12:00:00.123456Z"


def test_a_single_action_decodes() -> None:
    assert decode_action(json.dumps(_action()).encode()).action_id == "a-1"


MALFORMED: list[tuple[str, bytes, str]] = [
    # (what, body, what the error must say)
    ("empty body", b"", "Input data was truncated"),
    ("not JSON", b"{plan", "JSON is malformed"),
    ("truncated JSON", b'{"plan_id": "p", "actions": [', "truncated"),
    ("non-UTF-8 bytes", b'{"plan_id": "\xff\xfe", "actions": []}', "invalid UTF-8 at byte 13"),
    ("NaN literal", _plan(actions=[_action()])[:-1] + b', "x": NaN}', "JSON is malformed"),
    ("top level is an array", b"[]", "Expected `object`, got `array`"),
    ("top level is a string", b'"plan"', "Expected `object`, got `str`"),
    ("top level is null", b"null", "Expected `object`, got `null`"),
    ("missing plan_id", _plan(plan_id=_DROP), "Object missing required field `plan_id`"),
    ("missing actions", _plan(actions=_DROP), "Object missing required field `actions`"),
    ("plan_id is a number", _plan(plan_id=7), "Expected `str`, got `int` - at `$.plan_id`"),
    ("plan_id empty", _plan(plan_id=""), "length >= 1 - at `$.plan_id`"),
    ("plan_id has a space", _plan(plan_id="p 1"), "at `$.plan_id`"),
    ("plan_id too long", _plan(plan_id="p" * 129), "length <= 128 - at `$.plan_id`"),
    ("actions is an object", _plan(actions={}), "Expected `array`, got `object` - at `$.actions`"),
    ("empty batch", _plan(actions=[]), "length >= 1 - at `$.actions`"),
    (
        "too many actions",
        _plan(actions=[_action(action_id=f"a{i}") for i in range(MAX_ACTIONS_PER_PLAN + 1)]),
        f"length <= {MAX_ACTIONS_PER_PLAN} - at `$.actions`",
    ),
    (
        "action is a string",
        _plan(actions=["NO_OP"]),
        "Expected `object`, got `str` - at `$.actions[0]`",
    ),
    (
        "action missing action_id",
        _plan(actions=[_action(action_id=_DROP)]),
        "missing required field `action_id` - at `$.actions[0]`",
    ),
    (
        "unknown kind",
        _plan(actions=[_action(), _action(action_id="a-2", action_kind="DELETE_EVERYTHING")]),
        "Invalid enum value 'DELETE_EVERYTHING' - at `$.actions[1].action_kind`",
    ),
    (
        "kind in lower case",
        _plan(actions=[_action(action_kind="no_op")]),
        "Invalid enum value 'no_op' - at `$.actions[0].action_kind`",
    ),
    (
        "kind as a number",
        _plan(actions=[_action(action_kind=5)]),
        "Expected `str`, got `int` - at `$.actions[0].action_kind`",
    ),
    ("module empty", _plan(actions=[_action(module_name="")]), "at `$.actions[0].module_name`"),
    (
        "module with a space",
        _plan(actions=[_action(module_name="cognition detector")]),
        "at `$.actions[0].module_name`",
    ),
    (
        "module with a wildcard",
        _plan(actions=[_action(module_name="#")]),
        "at `$.actions[0].module_name`",
    ),
    (
        "huge module name",
        _plan(actions=[_action(module_name="m" * 10_000_000)]),
        "length <= 128 - at `$.actions[0].module_name`",
    ),
    (
        "parameters is a list",
        _plan(actions=[_action(parameters=["a"])]),
        "Expected `object`, got `array` - at `$.actions[0].parameters`",
    ),
    (
        "parameter value is a number",
        _plan(actions=[_action(parameters={"suggested_delta": 0.1})]),
        "Expected `str`, got `float` - at `$.actions[0].parameters[...]`",
    ),
    (
        "huge parameter value",
        _plan(actions=[_action(parameters={"k": "v" * 5000})]),
        "length <= 1024 - at `$.actions[0].parameters[...]`",
    ),
    (
        "empty parameter name",
        _plan(actions=[_action(parameters={"": "v"})]),
        "length >= 1 - at `key` in `$.actions[0].parameters`",
    ),
    (
        "too many parameters",
        _plan(actions=[_action(parameters={f"k{i}": "v" for i in range(33)})]),
        "length <= 32 - at `$.actions[0].parameters`",
    ),
    (
        "priority is a float",
        _plan(actions=[_action(priority=1.5)]),
        "Expected `int`, got `float` - at `$.actions[0].priority`",
    ),
    (
        "priority is a string",
        _plan(actions=[_action(priority="1")]),
        "Expected `int`, got `str` - at `$.actions[0].priority`",
    ),
    (
        "priority is a bool",
        _plan(actions=[_action(priority=True)]),
        "Expected `int`, got `bool` - at `$.actions[0].priority`",
    ),
    (
        "priority out of range",
        _plan(actions=[_action(priority=2**40)]),
        "at `$.actions[0].priority`",
    ),
    (
        "huge rationale",
        _plan(actions=[_action(rationale="r" * 5000)]),
        "length <= 4096 - at `$.actions[0].rationale`",
    ),
    (
        "duplicate action ids",
        _plan(actions=[_action(), _action(action_kind="NO_OP")]),
        "duplicate action_id 'a-1' (first at $.actions[0]) - at `$.actions[1].action_id`",
    ),
    (
        "created_at without an offset",
        _plan(created_at="2026-11-23T12:00:00"),
        "at `$.created_at`",
    ),
    ("created_at not a time", _plan(created_at="yesterday"), "at `$.created_at`"),
]


@pytest.mark.parametrize(("what", "body", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_plans_are_refused_with_a_message_that_says_where(
    what: str, body: bytes, message: str
) -> None:
    with pytest.raises(msgspec.DecodeError) as refused:
        decode_plan(body)
    assert message in str(refused.value)


def test_a_wrong_content_type_is_refused() -> None:
    with pytest.raises(msgspec.DecodeError, match="unsupported content type 'text/plain'"):
        decode_plan(b"{}", "text/plain")


def test_msgpack_of_the_wrong_shape_names_the_path() -> None:
    body = msgspec.msgpack.encode({"plan_id": "p", "actions": [{"action_id": 1}]})
    with pytest.raises(msgspec.ValidationError, match=r"at `\$.actions\[0\].action_id`"):
        decode_plan(body, "application/msgpack")


@pytest.mark.parametrize("name", list(MESSAGES))
def test_the_stored_json_schemas_match_the_types(name: str) -> None:
    stored = (SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8")
    assert stored == render(name), "run `python -m schemas.jsonschema` and commit the result"


def test_the_json_schema_accepts_the_example_and_refuses_a_bad_plan() -> None:
    schema = json_schema("plan")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(json.loads(EXAMPLE_PLAN_PATH.read_text()))
    bad = json.loads(EXAMPLE_PLAN_PATH.read_text())
    bad["actions"][0]["action_kind"] = "DELETE_EVERYTHING"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)


def test_plans_are_immutable() -> None:
    plan = decode_plan(EXAMPLE_PLAN_PATH.read_bytes())
    with pytest.raises(AttributeError):
        plan.plan_id = "other"  # type: ignore[misc]
    assert isinstance(plan, Plan)


def test_msgpack_with_a_string_that_is_not_utf8_is_refused() -> None:
    body = msgspec.msgpack.encode({"plan_id": "p", "actions": []}).replace(b"\xa1p", b"\xa1\xff")
    with pytest.raises(msgspec.DecodeError, match="not valid UTF-8"):
        decode_plan(body, "application/msgpack")
