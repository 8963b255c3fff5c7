"""JSON Schema for every wire message, generated from the Structs (never kept by hand).

``python -m schemas.jsonschema`` rewrites the copies in ``schemas/json/`` for non-Python
clients; a test fails when they drift from the types.
"""

from __future__ import annotations

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
    schema: dict[str, Any] = msgspec.json.schema(message_type)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"self-optimiser/{name}.schema.json",
        **schema,
    }


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
