"""One contract, enforced alike: the shipped JSON Schema and the worker agree on every body.

A corpus of hostile bodies (what a Node.js planner and a fuzzer sent) and bodies hypothesis
generates are each judged twice: by ``jsonschema`` with the shipped ``plan.schema.json`` (2020-12,
formats checked) and by the worker's decoder. They must agree, but for the cases a JSON Schema
cannot express, which docs/wire-contract.md lists (``SCHEMA_CANNOT``).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from schemas import decode_plan
from tests.support.corpus import CORPUS, SCHEMA_CANNOT, body
from tests.support.paths import ROOT
from worker.core.text import printable

SCHEMA = json.loads((ROOT / "schemas" / "json" / "plan.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())


def worker_reads(body: bytes) -> bool:
    try:
        decode_plan(body)
    except msgspec.DecodeError:
        return False
    return True


def schema_reads(body: bytes) -> bool:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return VALIDATOR.is_valid(document)


@pytest.mark.parametrize("case", list(CORPUS))
def test_the_schema_and_the_worker_agree_on_the_corpus(case: str) -> None:
    raw, expected = CORPUS[case]
    assert (schema_reads(raw), worker_reads(raw)) == (expected, expected)


@pytest.mark.parametrize("case", list(SCHEMA_CANNOT))
def test_what_the_schema_cannot_express_the_worker_refuses(case: str) -> None:
    assert not worker_reads(SCHEMA_CANNOT[case])
    readme = (ROOT / "docs" / "wire-contract.md").read_text()
    assert case in readme, "docs/wire-contract.md lists it"


# --- generated plans: valid ones, and ones broken in one field ---------------------------

_ids = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=130)
_texts = st.text(max_size=40)
_values = st.one_of(_texts, st.integers(), st.floats(allow_nan=False), st.none(), st.booleans())


@st.composite
def _actions(draw: st.DrawFn, index: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "action_id": f"a-{index}",
        "module_name": draw(st.sampled_from(["cognition.m", "memory/index:v2", "_x"])),
        "action_kind": draw(st.sampled_from(["NO_OP", "TUNE_THRESHOLD", "FLAG_FOR_REVIEW"])),
    }
    if draw(st.booleans()):
        fields["parameters"] = draw(
            st.dictionaries(st.sampled_from(["suggested_delta", "v", "x.y"]), _texts, max_size=3)
        )
    if draw(st.booleans()):
        fields["priority"] = draw(st.integers(min_value=-(2**32), max_value=2**32))
    if draw(st.booleans()):
        fields["rationale"] = draw(_texts)
    broken = draw(st.sampled_from(["", "action_id", "module_name", "parameters", "extra"]))
    if broken == "action_id":
        fields["action_id"] = draw(_ids)
    elif broken == "module_name":
        fields["module_name"] = draw(_texts)
    elif broken == "parameters":
        fields["parameters"] = draw(st.dictionaries(_texts, _values, max_size=3))
    elif broken == "extra":
        fields[draw(st.sampled_from(["paramters", "confidence"]))] = draw(_values)
    return fields


@st.composite
def _plans(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(min_value=0, max_value=3))
    document: dict[str, Any] = {
        "plan_id": draw(st.one_of(st.just("p-1"), _ids)),
        "actions": [draw(_actions(index)) for index in range(count)],
    }
    ids = [a["action_id"] for a in document["actions"]]
    assume(len(set(ids)) == len(ids))  # duplicates: what the schema cannot say (above)
    if draw(st.booleans()):
        document["planner"] = draw(_texts)
    if draw(st.booleans()):
        document["future"] = draw(_values)
    return document


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_plans())
def test_the_schema_and_the_worker_agree_on_generated_plans(document: dict[str, Any]) -> None:
    raw = body(document)
    assert schema_reads(raw) == worker_reads(raw), raw


def test_control_characters_are_shown_escaped_to_people() -> None:
    assert printable("ok\x1b[2J\n\x9b2J\x7f") == "ok\\x1b[2J\\n\\x9b2J\\x7f"
    assert printable("héllo wörld ✓") == "héllo wörld ✓"


_ACTION = b'[{"action_id": "a", "module_name": "m", "action_kind": "NO_OP"}]'


@pytest.mark.parametrize(
    ("raw", "content_type", "said"),
    [
        (
            b'{"plan_id": "p", "planner": "\\ud800", "actions": ' + _ACTION + b"}",
            "application/json",
            "a lone surrogate escape \\ud800 at byte 29",
        ),
        (
            b'{"plan_id": "p", "x": "\xff", "actions": ' + _ACTION + b"}",
            "application/json",
            "invalid UTF-8 at byte 23",
        ),
        (
            b'{"plan_id": "p", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
            "application/json",
            "nests arrays or objects deeper than the decoder can follow",
        ),
        (
            b'{"plan_id": "p", "actions": ' + _ACTION + b"}",
            "application/msgpack",
            "the body looks like JSON, but its content type says application/msgpack",
        ),
    ],
    ids=["lone surrogate", "invalid UTF-8", "deep nesting", "JSON labelled msgpack"],
)
def test_a_refusal_names_the_real_cause_and_where(raw: bytes, content_type: str, said: str) -> None:
    with pytest.raises(msgspec.DecodeError) as refused:
        decode_plan(raw, content_type)
    assert said in str(refused.value)
