"""The AsyncAPI document: shipped as generated, valid to the AsyncAPI parser, true to the worker.

``schemas/asyncapi.py`` repeats the worker's wire names and headers (``schemas`` imports
nothing of the worker), so these tests hold the two equal: the exchanges and queues against
``worker.amqp.topology`` (and on a real broker, what the worker publishes against what the
document says of it: ``tests/integration/test_asyncapi.py``).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from schemas import EnactmentRecord, ImprovementAction, Plan, asyncapi, routing_key
from schemas.asyncapi import DOCUMENT, document, render
from schemas.commands import OWNER, SubsystemCommand, SubsystemReply, command_routing_key
from schemas.control import ControlMessage
from schemas.names import Names
from tests.support.asyncapi import DOC, MESSAGES
from tests.support.asyncapi import address as _address
from tests.support.asyncapi import validator as _validator
from tests.support.nodejs import run_script
from worker.amqp.metrics import PARK_REASONS
from worker.amqp.topology import layout
from worker.cli import main
from worker.settings import WorkerSettings

#: Each message of the document with a body the worker decodes, and the Struct it decodes to.
DECODED: dict[str, type[msgspec.Struct]] = {
    "plan": Plan,
    "record": EnactmentRecord,
    "reviewItem": ImprovementAction,
    "command": SubsystemCommand,
    "reply": SubsystemReply,
    "control": ControlMessage,
}


def test_the_stored_document_matches_the_types() -> None:
    stored = DOCUMENT.read_text(encoding="utf-8")
    assert stored == render(), "run `python -m schemas.asyncapi` and commit the result"


def test_the_asyncapi_parser_finds_nothing_wrong() -> None:
    code, report = run_script("validate_asyncapi.mjs", str(DOCUMENT))
    assert report["version"] == "3.0.0"
    # "information" is only the parser's hint that AsyncAPI 3.1 exists.
    flagged = [d for d in report["diagnostics"] if d["severity"] in ("error", "warning")]
    assert (code, flagged) == (0, [])


def test_the_parser_would_see_a_channel_parameter_left_out(tmp_path: Path) -> None:
    # The check above can fail: a document missing what its routing key grammar names.
    broken = copy.deepcopy(DOC)
    del broken["channels"]["results"]["parameters"]["status"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    code, report = run_script("validate_asyncapi.mjs", str(path))
    assert code == 1
    assert any(
        d["severity"] == "error" and d["path"] == "channels.results.parameters"
        for d in report["diagnostics"]
    ), report


def test_the_generator_imports_nothing_of_the_worker() -> None:
    # schemas/ is for planners and ReflectionCycle, without the worker or an AMQP client.
    probe = (
        "import sys, schemas.asyncapi; "
        "print(','.join(m for m in sys.modules if m.split('.')[0] in "
        "('worker', 'aio_pika', 'aiormq', 'pamqp')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def test_every_exchange_and_queue_is_the_workers_own() -> None:
    names = Names("prod")
    declared = layout(names)
    exchanges = {e.name: e.type.value for e in declared.exchanges}
    queues = {q.name for q in declared.queues}
    documented_exchanges, documented_queues = {}, set()
    for channel in document("prod")["channels"].values():
        amqp = channel["bindings"]["amqp"]
        if amqp["is"] == "queue":
            documented_queues.add(amqp["queue"]["name"])
        elif amqp["exchange"]["name"]:  # not the default exchange of replies
            documented_exchanges[amqp["exchange"]["name"]] = amqp["exchange"]["type"]
    # The worker's own: the markers exchange, the state streams, the dead-letter exchange.
    internal_exchanges = {names.markers, names.notes, names.dead_exchange, names.checkpoints}
    assert documented_exchanges == {
        name: kind for name, kind in exchanges.items() if name not in internal_exchanges
    }
    assert documented_queues == queues - {names.results_log, names.checkpoints}


def test_the_settings_the_document_repeats_are_the_workers() -> None:
    assert WorkerSettings().namespace == asyncapi.DEFAULT_NAMESPACE
    headers = MESSAGES["parkedPlan"]["headers"]["properties"]
    assert headers["x-error-kind"]["enum"] == list(PARK_REASONS)


#: JSON Schema keywords newer than draft-07, which AsyncAPI's default schema format builds on.
_AFTER_DRAFT_07 = {
    "$defs", "prefixItems", "dependentRequired", "dependentSchemas", "unevaluatedItems",
    "unevaluatedProperties", "$anchor", "$dynamicRef", "$dynamicAnchor", "minContains",
    "maxContains",
}  # fmt: skip


def _keywords(schema: Any) -> set[str]:
    if isinstance(schema, list):
        return set().union(*map(_keywords, schema))
    if not isinstance(schema, dict):
        return set()
    return set(schema) | set().union(*map(_keywords, schema.values()))


def test_the_payload_schemas_mean_the_same_in_draft_07() -> None:
    # Over-approximate (property names count too): a false alarm is cheap to look at.
    assert _keywords(DOC["components"]["schemas"]) & _AFTER_DRAFT_07 == set()


def test_the_results_routing_key_grammar_is_the_workers() -> None:
    record = asyncapi.EXAMPLE_RECORD
    assert _address("results", msgspec.to_builtins(record)) == routing_key(record)


def test_the_commands_routing_key_grammar_is_the_workers() -> None:
    command = asyncapi.EXAMPLE_COMMAND
    expected = command_routing_key(command)
    subsystem = expected.split(".")[0]
    assert _address("commands", msgspec.to_builtins(command), subsystem=subsystem) == expected
    parameters = DOC["components"]["parameters"]
    assert set(parameters["subsystem"]["enum"]) == {owner.value for owner in OWNER.values()}
    assert set(parameters["verb"]["enum"]) == {verb.__struct_config__.tag for verb in OWNER}


@pytest.mark.parametrize("name", [m for m in MESSAGES if "examples" in MESSAGES[m]])
def test_every_example_is_valid_and_decodes(name: str) -> None:
    # The AsyncAPI parser of 3.0 does not check examples against their schemas: this does.
    message = MESSAGES[name]
    for example in message["examples"]:
        _validator(message["payload"]).validate(example["payload"])
        if "headers" in example:
            _validator(message["headers"]).validate(example["headers"])
        msgspec.json.decode(json.dumps(example["payload"]), type=DECODED[name])


def test_schema_asyncapi_prints_the_document_for_a_namespace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema", "asyncapi"]) == 0
    assert capsys.readouterr().out == DOCUMENT.read_text(encoding="utf-8")
    assert main(["schema", "asyncapi", "--namespace", "prod"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["channels"]["plansQueue"]["address"] == "prod.plans"
    assert "optimiser." not in json.dumps(printed["channels"])
