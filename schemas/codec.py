"""Encoders and decoders for the wire messages, built once at import.

JSON is the default body (``application/json``); msgpack (``application/msgpack``) is accepted
for plans. Decoding errors are msgspec's own: ``msgspec.ValidationError`` names the path of the
bad value, ``msgspec.DecodeError`` the byte where the body stopped being JSON.
"""

from __future__ import annotations

import re
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
    """Decode and validate a plan; raise ``msgspec.DecodeError`` (or its ``ValidationError``).

    Every error names the real cause and where: a path (``$.actions[3].action_id``) or a byte
    offset, including the cases msgspec words otherwise (a lone surrogate escape, invalid UTF-8
    where no field is read, nesting deeper than it recurses, JSON sent as msgpack).
    """
    json = content_type is None or content_type == JSON
    if json:
        decoder: msgspec.json.Decoder[Plan] | msgspec.msgpack.Decoder[Plan] = _plan_json
        _check_utf8(body)
    elif content_type in PLAN_CONTENT_TYPES:
        decoder = _plan_msgpack
    else:
        raise msgspec.DecodeError(
            f"unsupported content type {content_type!r}; expected one of "
            f"{', '.join(sorted(PLAN_CONTENT_TYPES))}"
        )
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        cause = _cause(body, json, content_type, str(exc))
        if cause is None:
            raise
        raise msgspec.DecodeError(cause) from None
    except UnicodeDecodeError as exc:  # msgspec < 0.23 lets it escape for msgpack's strings
        raise msgspec.DecodeError(f"a string is not valid UTF-8: {exc.reason}") from None
    except RecursionError:
        raise msgspec.DecodeError(
            "the body nests arrays or objects deeper than the decoder can follow"
        ) from None


def _check_utf8(body: bytes) -> None:
    """JSON is UTF-8 (RFC 8259), also in fields the worker does not read."""
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(
            f"invalid UTF-8 at byte {exc.start} ({body[exc.start : exc.start + 4]!r}: {exc.reason})"
        ) from None


#: A UTF-16 escape of a surrogate not part of a pair: JSON text, but no Unicode string.
_LONE_SURROGATE: Final = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _cause(body: bytes, json: bool, content_type: str | None, said: str) -> str | None:
    """What msgspec's ``said`` means, when it words it otherwise; None when it is right."""
    if json:
        lone = _LONE_SURROGATE.search(body)
        if lone is None or not ("truncated" in said or "surrogate" in said):
            return None
        return (
            f"a lone surrogate escape {lone.group().decode()} at byte {lone.start()}: a "
            f"string must be Unicode text"
        )
    if "UTF-8" in said:  # msgspec 0.23 says so itself; earlier ones raised UnicodeDecodeError
        return f"a string is not valid UTF-8 ({said})"
    if body.lstrip()[:1] in (b"{", b"["):
        return (
            f"the body looks like JSON, but its content type says {content_type}: send it as "
            f"{JSON} (msgpack read: {said})"
        )
    return None


def decode_record(body: bytes) -> EnactmentRecord:
    """Decode and validate an enactment record (JSON)."""
    return _record_json.decode(body)


def decode_action(body: bytes) -> ImprovementAction:
    """Decode and validate a single action (JSON), as found on the review queue."""
    return _action_json.decode(body)
