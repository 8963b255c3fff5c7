"""The contract corpus: hostile bodies (what a Node.js planner and a fuzzer sent), each with
whether the worker reads it, and what a JSON Schema cannot say. ``test_contract`` judges them
with ``jsonschema`` and the worker's decoder, ``test_ajv_strict`` with ajv."""

from __future__ import annotations

import json
from typing import Any


def action(**fields: Any) -> dict[str, Any]:
    return {"action_id": "a-1", "module_name": "cognition.m", "action_kind": "NO_OP", **fields}


def plan(*actions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"plan_id": "p-1", "actions": list(actions) or [action()], **fields}


def body(document: object) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


#: What a JSON Schema cannot say: listed in docs/wire-contract.md, refused by the worker.
SCHEMA_CANNOT = {
    "duplicate action ids": body(plan(action(), action())),
    "an integer written as 1.0": body(plan(action(priority=1.0))),
    "a lone surrogate escape": b'{"plan_id": "p-1", "planner": "\\ud800", "actions": '
    + json.dumps([action()]).encode()
    + b"}",
}

CORPUS: dict[str, tuple[bytes, bool]] = {
    "a plain plan": (body(plan()), True),
    "an unknown plan field (forward compatibility)": (body(plan(future={"x": 1})), True),
    "an unknown action field": (body(plan(action(paramters={"budget_factor": "1.1"}))), False),
    "an id ending in a newline": (body(plan(action(action_id="a1\n"))), False),
    "a plan id ending in a newline": (body(plan(plan_id="p1\n")), False),
    "a module ending in a newline": (body(plan(action(module_name="cognition.m\n"))), False),
    "a parameter name ending in a newline": (
        body(plan(action(parameters={"suggested_delta\n": "0.1"}))),
        False,
    ),
    "an ESC in a parameter value": (body(plan(action(parameters={"v": "2\x1b[2J"}))), False),
    "a C1 CSI in a parameter value": (body(plan(action(parameters={"v": "2\x9b2J"}))), False),
    "a newline in a parameter value": (body(plan(action(parameters={"v": " 0.2\n"}))), False),
    "an ESC in a rationale (escaped when printed)": (
        body(plan(action(rationale="\x1b[2Jowned"))),
        True,
    ),
    "a leap second": (body(plan(created_at="2016-12-31T23:59:60Z")), False),
    "a time without its offset": (body(plan(created_at="2026-11-24T12:00:00")), False),
    "a time with its offset": (body(plan(created_at="2026-11-24T12:00:00+01:00")), True),
    "invalid UTF-8 in an unknown field": (
        b'{"plan_id": "p-1", "x": "\xff", "actions": ' + json.dumps([action()]).encode() + b"}",
        False,
    ),
    "a priority beyond 32 bits": (body(plan(action(priority=2**31))), False),
    "no actions": (body(plan(actions=[])), False),
    "an unknown kind": (body(plan(action(action_kind="DELETE_EVERYTHING"))), False),
    "a kind in lower case": (body(plan(action(action_kind="no_op"))), False),
    "an id of 129 characters": (body(plan(action(action_id="a" * 129))), False),
    "an id with a space": (body(plan(action(action_id="a 1"))), False),
    "a parameter that is a number, not a string": (
        body(plan(action(parameters={"suggested_delta": 0.1}))),
        False,
    ),
    "deep nesting in an unknown field": (
        b'{"plan_id": "p-1", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b', "actions": '
        b'[{"action_id": "a", "module_name": "m", "action_kind": "NO_OP"}]}',
        False,
    ),
}
