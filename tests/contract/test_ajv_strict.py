"""The shipped JSON Schemas in ajv, the validator most non-Python clients use.

Every schema in ``schemas/json/`` must compile with ajv's 2020-12 class (``ajv/dist/2020``) in
strict mode with ajv-formats, as docs/wire-contract.md tells clients to; ajv must accept what the
worker accepts and refuse what it refuses (the contract corpus, ``tests/support/corpus.py``), but
for the differences docs/wire-contract.md lists. Run by ``tests/js/compile_schemas.mjs``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas import asyncapi, encode
from schemas.jsonschema import MESSAGES, SCHEMA_DIR, strict
from tests.support.corpus import CORPUS
from tests.support.factories import EXAMPLE_PLAN_PATH
from tests.support.nodejs import node_or_skip, run_script
from tests.support.paths import ROOT


def _json(message: Any) -> Any:
    return json.loads(encode(message))


#: Bodies the worker writes or reads, by what they are: (schema, body). The AsyncAPI
#: document's examples are these too.
VALID: dict[str, tuple[str, Any]] = {
    "the example plan": ("plan", json.loads(EXAMPLE_PLAN_PATH.read_text())),
    "a plan": ("plan", _json(asyncapi.EXAMPLE_PLAN)),
    "an action": ("action", _json(asyncapi.EXAMPLE_ACTION)),
    "a record": ("record", _json(asyncapi.EXAMPLE_RECORD)),
    "a command": ("command", _json(asyncapi.EXAMPLE_COMMAND)),
    "a reply": ("reply", _json(asyncapi.EXAMPLE_REPLY)),
    "a pause": ("control", _json(asyncapi.EXAMPLE_PAUSE)),
}

INVALID: dict[str, tuple[str, Any]] = {
    "a plan of an unknown kind": (
        "plan",
        {**VALID["a plan"][1], "actions": [{**VALID["an action"][1], "action_kind": "DROP"}]},
    ),
    "a command of an unknown verb": (
        "command",
        {**VALID["a command"][1], "arguments": {"verb": "delete", "delta": 0.1}},
    ),
    "a reply whose change is of another kind than its fields": (
        "reply",
        {**VALID["a reply"][1], "change": {"kind": "threshold", "old_s": 1.0, "new_s": 2.0}},
    ),
    "a pause without its time": ("control", {"command": "pause"}),
}

#: Where ajv-formats judges otherwise than the worker, and what docs/wire-contract.md says.
AJV_DIFFERS = {"a leap second": "ajv-formats accepts a leap second"}


def _readable(raw: bytes) -> Any:
    """The body as JSON, or None when it is not JSON at all (ajv never sees those)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


CONTRACT = {
    case: ("plan", document)
    for case, (raw, _) in CORPUS.items()
    if (document := _readable(raw)) is not None
}


@pytest.fixture(scope="module")
def ajv() -> dict[str, Any]:
    """ajv's report: each schema compiled or why not, and its verdict on every case."""
    cases = {**VALID, **INVALID, **CONTRACT}
    stdin = json.dumps([{"schema": schema, "body": body} for schema, body in cases.values()])
    code, report = run_script("compile_schemas.mjs", str(SCHEMA_DIR), stdin=stdin)
    assert code == 0, report
    assert isinstance(report, dict)
    report["verdicts"] = dict(zip(cases, report.pop("cases"), strict=True))
    return report


@pytest.mark.parametrize("name", list(MESSAGES))
def test_every_schema_compiles_in_ajv_2020_strict_with_formats(
    ajv: dict[str, Any], name: str
) -> None:
    assert name in ajv["schemas"], f"{name}.schema.json was not compiled"
    assert ajv["schemas"][name] is None, ajv["schemas"][name]


@pytest.mark.parametrize("case", list(VALID))
def test_ajv_accepts_what_the_worker_sends_and_reads(ajv: dict[str, Any], case: str) -> None:
    verdict = ajv["verdicts"][case]
    assert verdict["valid"] is True, verdict["errors"]


@pytest.mark.parametrize("case", list(INVALID))
def test_ajv_refuses_a_bad_message(ajv: dict[str, Any], case: str) -> None:
    assert ajv["verdicts"][case]["valid"] is False


@pytest.mark.parametrize("case", list(CONTRACT))
def test_ajv_and_the_worker_agree_on_the_contract_corpus(ajv: dict[str, Any], case: str) -> None:
    worker_reads = CORPUS[case][1]
    if case in AJV_DIFFERS:
        assert ajv["verdicts"][case]["valid"] is not worker_reads
        page = ROOT / "docs" / "wire-contract.md"
        assert AJV_DIFFERS[case] in " ".join(page.read_text().split()), "the page says so"
    else:
        assert ajv["verdicts"][case]["valid"] is worker_reads, ajv["verdicts"][case]["errors"]


def test_only_keywords_are_dropped_not_a_property_of_the_same_name() -> None:
    schema = {
        "properties": {"discriminator": {"type": "string"}},
        "anyOf": [{"properties": {"x": {"discriminator": {"propertyName": "x"}}}}],
        "discriminator": {"propertyName": "verb"},
        "examples": [{"discriminator": "kept: a value, not a schema"}],
    }
    assert strict(schema) == {
        "properties": {"discriminator": {"type": "string"}},
        "anyOf": [{"properties": {"x": {}}}],
        "examples": [{"discriminator": "kept: a value, not a schema"}],
    }


def test_without_node_the_checks_skip_here_and_fail_in_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match=r"Node\.js is not installed"):
        node_or_skip({"PATH": ""})
    with pytest.raises(pytest.fail.Exception, match=r"CI needs the Node\.js contract checks"):
        node_or_skip({"PATH": "", "CI": "true"})
