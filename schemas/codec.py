"""Encoders and decoders for the wire messages, built once at import.

JSON is the default body (``application/json``); msgpack (``application/msgpack``) is accepted
for plans. Decoding errors are msgspec's own: ``msgspec.ValidationError`` names the path of the
bad value, ``msgspec.DecodeError`` the byte where the body stopped being JSON.
"""

from __future__ import annotations

from typing import Final

import msgspec

from schemas.messages import EnactmentRecord, ImprovementAction, Plan

JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"
#: Content types a plan may arrive in; a missing content type is read as JSON.
PLAN_CONTENT_TYPES: Final = frozenset({JSON, MSGPACK, "application/x-msgpack"})

_json_encoder: Final = msgspec.json.Encoder()
_plan_json: Final = msgspec.json.Decoder(Plan)
_plan_msgpack: Final = msgspec.msgpack.Decoder(Plan)
_record_json: Final = msgspec.json.Decoder(EnactmentRecord)
_action_json: Final = msgspec.json.Decoder(ImprovementAction)


def encode(message: msgspec.Struct) -> bytes:
    """Encode any wire message as JSON."""
    return _json_encoder.encode(message)


def decode_plan(body: bytes, content_type: str | None = JSON) -> Plan:
    """Decode and validate a plan; raise ``msgspec.DecodeError`` (or its ``ValidationError``)."""
    if content_type is None or content_type == JSON:
        decoder: msgspec.json.Decoder[Plan] | msgspec.msgpack.Decoder[Plan] = _plan_json
    elif content_type in PLAN_CONTENT_TYPES:
        decoder = _plan_msgpack
    else:
        raise msgspec.DecodeError(
            f"unsupported content type {content_type!r}; expected one of "
            f"{', '.join(sorted(PLAN_CONTENT_TYPES))}"
        )
    try:
        return decoder.decode(body)
    except UnicodeDecodeError as exc:
        # msgspec lets this escape for a string that is not UTF-8; keep one error type for callers.
        raise msgspec.DecodeError(f"a string is not valid UTF-8: {exc.reason}") from None


def decode_record(body: bytes) -> EnactmentRecord:
    """Decode and validate an enactment record (JSON)."""
    return _record_json.decode(body)


def decode_action(body: bytes) -> ImprovementAction:
    """Decode and validate a single action (JSON), as found on the review queue."""
    return _action_json.decode(body)
