"""JSON Schema for every wire message, generated from the Structs (never kept by hand).

``python -m schemas.jsonschema`` rewrites the copies in ``schemas/json/`` for non-Python
clients; a test fails when they drift from the types. Every schema compiles in the strictest
common validator, ajv's 2020-12 class in strict mode (with ajv-formats): only JSON Schema
keywords, nothing a strict validator refuses as unknown.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any, Final

import msgspec

from schemas.commands import SubsystemCommand, SubsystemReply
from schemas.control import ControlMessage
from schemas.messages import EnactmentRecord, ImprovementAction, Message, Plan

SCHEMA_DIR: Final = Path(__file__).with_name("json")
#: The messages that travel on their own, by the name used on the command line and in files.
MESSAGES: Final[dict[str, type[Message]]] = {
    "plan": Plan,
    "action": ImprovementAction,
    "record": EnactmentRecord,
    "command": SubsystemCommand,
    "reply": SubsystemReply,
    "control": ControlMessage,
}


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one message, self-contained."""
    try:
        message_type = MESSAGES[name]
    except KeyError:
        known = ", ".join(MESSAGES)
        raise KeyError(f"no message named {name!r}; known: {known}") from None
    schema = strict(msgspec.json.schema(message_type))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"self-optimiser/{name}.schema.json",
        **schema,
    }


#: Keywords msgspec writes that are not JSON Schema's. ``discriminator`` is OpenAPI's (on a
#: tagged union): a strict validator refuses it as unknown, and it adds nothing to validation,
#: since each branch already requires its own value of the tag field (``"verb": {"enum":
#: ["tune"]}``).
NOT_JSON_SCHEMA: Final = frozenset({"discriminator"})


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without the keywords of ``NOT_JSON_SCHEMA``, at any depth, and each
    ``description`` dedented (msgspec 0.23 dedents docstrings, earlier ones did not: the
    published schema must not change with the version installed).

    Only keywords are dropped: a property may still be named ``discriminator``.
    """
    kept: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword in NOT_JSON_SCHEMA:
            continue
        if keyword == "description" and isinstance(value, str):
            kept[keyword] = inspect.cleandoc(value)
            continue
        if keyword in _SCHEMA_MAPS:  # name -> schema: the names are data, not keywords
            kept[keyword] = {name: strict(sub) for name, sub in value.items()}
        elif keyword in _SCHEMA_LISTS:
            kept[keyword] = [strict(sub) for sub in value]
        elif keyword in _SCHEMA_VALUES and isinstance(value, dict):
            kept[keyword] = strict(value)
        else:  # enum, const, examples, default, required...: values, kept as they are
            kept[keyword] = value
    return kept


# Where 2020-12 keywords hold schemas (the ones msgspec writes, and their siblings).
_SCHEMA_MAPS: Final = frozenset({"$defs", "properties", "patternProperties", "dependentSchemas"})
_SCHEMA_LISTS: Final = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_VALUES: Final = frozenset(
    {
        "items", "additionalProperties", "propertyNames", "contains", "not", "if", "then",
        "else", "unevaluatedItems", "unevaluatedProperties",
    }
)  # fmt: skip


def render(name: str) -> str:
    """The schema as the text stored in ``schemas/json/<name>.schema.json``."""
    return json.dumps(json_schema(name), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in MESSAGES:
        path = directory / f"{name}.schema.json"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_all():
        sys.stdout.write(f"wrote {written_path}\n")
