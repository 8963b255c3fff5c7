"""The AsyncAPI document as the contract tests read it: its messages, a channel's address
filled in from a payload, and a validator for a schema of the document."""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from schemas.asyncapi import document

DOC = document()
MESSAGES = DOC["components"]["messages"]


def pointer(payload: Any, location: str) -> str:
    """The value at a runtime expression ``$message.payload#/a/b``."""
    value = payload
    for part in location.removeprefix("$message.payload#/").split("/"):
        value = value[part]
    return str(value)


def address(channel: str, payload: Any, **known: str) -> str:
    """The channel's address with each parameter read from the payload (or given)."""
    parameters = DOC["components"]["parameters"]

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in known:
            return known[name]
        return pointer(payload, parameters[name]["location"])

    return re.sub(r"\{(\w+)\}", value, DOC["channels"][channel]["address"])


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A 2020-12 validator for a schema of the document, its component $refs resolved."""
    return Draft202012Validator(
        {**schema, "components": DOC["components"]}, format_checker=FormatChecker()
    )
