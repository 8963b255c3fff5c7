"""Reading frames whose short strings are not UTF-8, instead of dropping the connection.

AMQP's short strings (a routing key, a message id, a content type, a header's name) are bytes
on the wire; pamqp 4 decodes them as strict UTF-8, so one such byte in a delivery fails the
whole frame: aiormq drops the connection, and the plan *and every healthy plan prefetched with
it* are redelivered until they are dead-lettered. Anyone who may publish a plan can do that.

``install()`` makes pamqp decode short strings and table keys with ``surrogateescape``: a
byte that is not UTF-8 becomes one lone surrogate (U+DC80..U+DCFF), valid UTF-8 reads exactly
as before, and the frame is read. The readers of deliveries then ask ``unreadable()``: the
worker parks such a plan alone, the stream followers skip such a message with a warning. Long
strings need nothing: pamqp already returns their bytes.

It replaces three entries of pamqp's decoder tables and checks first that they are the ones
this was written against, so a pamqp that changed fails loudly here instead of silently
decoding otherwise (docs/wire-contract.md says what a client cannot read).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

import aiormq
from pamqp import decode

#: A lone surrogate that ``surrogateescape`` makes of a byte that is not UTF-8.
_ESCAPED: Final = range(0xDC80, 0xDD00)
_AN_ESCAPED: Final = re.compile("[\udc80-\udcff]")
_TABLE_TYPE: Final = b"F"
_ORIGINALS: Final = {
    "shortstr": decode.short_str,
    "table": decode.field_table,
}
_installed = False


class FrameAdapterError(RuntimeError):
    """pamqp is not laid out as this adapter expects: do not read frames with it."""


def short_str(value: bytes) -> tuple[int, str]:
    """pamqp's ``short_str``, with bytes that are not UTF-8 kept as lone surrogates."""
    try:
        length = struct.unpack_from(">B", value, 0)[0]
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack short string value") from err
    return length + 1, value[1 : length + 1].decode("utf-8", "surrogateescape")


def field_table(value: bytes) -> tuple[int, dict[str, Any]]:
    """pamqp's ``field_table``, with keys that are not UTF-8 kept as lone surrogates."""
    try:
        length = struct.unpack_from(">I", value, 0)[0]
        offset, end = 4, 4 + length
        if end > len(value):
            raise ValueError("Field table length exceeds available data")
        data: dict[str, Any] = {}
        while offset < end:
            key_length = struct.unpack_from(">B", value, offset)[0]
            offset += 1
            if offset + key_length > end:
                raise ValueError("Field table key length exceeds data")
            key = value[offset : offset + key_length].decode("utf-8", "surrogateescape")
            offset += key_length
            consumed, data[key] = decode.embedded_value(value[offset:])
            offset += consumed
        return end, data
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack data") from err


def install() -> None:
    """Make pamqp read such frames (idempotent); ``FrameAdapterError`` if it cannot."""
    global _installed  # noqa: PLW0603 - once per process, like the tables it changes
    if _installed:
        return
    methods: dict[str, Callable[..., Any]] = decode.METHODS
    tables: dict[bytes, Callable[..., Any]] = decode.TABLE_MAPPING
    for name, original in _ORIGINALS.items():
        if methods.get(name) is not original:
            raise FrameAdapterError(f"pamqp.decode.METHODS[{name!r}] is not pamqp's own")
    if tables.get(_TABLE_TYPE) is not decode.field_table:
        raise FrameAdapterError("pamqp.decode.TABLE_MAPPING[b'F'] is not pamqp's own")
    methods["shortstr"] = short_str
    methods["table"] = field_table
    tables[_TABLE_TYPE] = field_table
    _installed = True


def is_escaped(text: str) -> bool:
    """Whether ``text`` holds a byte that was not UTF-8 (as ``install()`` decodes it)."""
    return _AN_ESCAPED.search(text) is not None


def shown(text: str) -> str:
    """``text`` with each byte that was not UTF-8 written ``\\xff``, for a log line or header."""
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if ord(c) in _ESCAPED else c for c in text)


def unreadable(routing_key: str | None, properties: aiormq.spec.Basic.Properties) -> list[str]:
    """Where a delivery holds bytes that are not UTF-8, as ``where: value`` (``shown``): its
    routing key, a string property, a header's name at any depth. Empty: all readable."""
    if not _suspect(routing_key, properties):
        return []
    found = []
    if routing_key and is_escaped(routing_key):
        found.append(f"routing key {shown(routing_key)!r}")
    for name in properties.__slots__:
        value = getattr(properties, name, None)
        if isinstance(value, str) and is_escaped(value):
            found.append(f"property {name} {shown(value)!r}")
    found += _in_table(properties.headers or {}, "header")
    return found


def _suspect(routing_key: str | None, p: aiormq.spec.Basic.Properties) -> bool:
    """Whether any short string is not ASCII: one C call over all of them, on the hot path
    (every record read back comes here); ``unreadable`` then looks closer."""
    headers = p.headers or {}
    text = "".join(
        (
            routing_key or "", p.content_type or "", p.content_encoding or "",
            p.correlation_id or "", p.reply_to or "", p.expiration or "", p.message_id or "",
            p.message_type or "", p.user_id or "", p.app_id or "", p.cluster_id or "", *headers,
        )
    )  # fmt: skip
    if not text.isascii():
        return True
    return any(type(value) in (dict, list) for value in headers.values())


def raw(text: str) -> bytes:
    """The bytes ``text`` was read from (``install()`` keeps them all)."""
    return text.encode("utf-8", "surrogateescape")


def readable(value: object) -> Any:
    """A header value (a table, a list, anything) with every name and string ``shown``, so
    that it can be encoded again."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, Mapping):
        return {shown(key): readable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [readable(item) for item in value]
    return value


def _in_table(table: Mapping[str, object], path: str) -> list[str]:
    found = []
    for key, value in table.items():
        if is_escaped(key):
            found.append(f"{path} name {shown(key)!r}")
        if isinstance(value, Mapping):
            found += _in_table(value, f"{path} {shown(key)}")
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping):
                    found += _in_table(item, f"{path} {shown(key)}")
    return found
