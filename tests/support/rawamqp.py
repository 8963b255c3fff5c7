"""A raw AMQP 0-9-1 publisher, for bytes no client library will send.

Frames are made with pamqp, then placeholders in them are swapped for other bytes of the same
length (bytes that are not UTF-8 in a routing key, a property, a header's name): what a
hostile planner with publish rights can put on the wire, and RabbitMQ passes on as it came.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pamqp import body, commands, frame, header
from pamqp.base import Frame


class RawPublisher:
    """One connection and channel; ``publish`` waits for the broker's confirm."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, url: str) -> RawPublisher:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 5672)
        raw = cls(reader, writer)
        writer.write(b"AMQP\x00\x00\x09\x01")
        await raw._expect(commands.Connection.Start)
        user, password = parts.username or "guest", parts.password or "guest"
        raw._send(0, commands.Connection.StartOk(response=f"\0{user}\0{password}"))
        tune = await raw._expect(commands.Connection.Tune)
        assert isinstance(tune, commands.Connection.Tune)
        raw._send(0, commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        raw._send(0, commands.Connection.Open(virtual_host=parts.path[1:] or "/"))
        await raw._expect(commands.Connection.OpenOk)
        raw._send(1, commands.Channel.Open())
        await raw._expect(commands.Channel.OpenOk)
        raw._send(1, commands.Confirm.Select())
        await raw._expect(commands.Confirm.SelectOk)
        return raw

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        payload: bytes,
        *,
        replace: Mapping[bytes, bytes],
        **properties: Any,
    ) -> None:
        """Publish, with each placeholder of ``replace`` swapped for its bytes (same length)."""
        wire = b"".join(
            [
                frame.marshal(
                    commands.Basic.Publish(exchange=exchange, routing_key=routing_key), 1
                ),
                frame.marshal(
                    header.ContentHeader(0, len(payload), commands.Basic.Properties(**properties)),
                    1,
                ),
                frame.marshal(body.ContentBody(payload), 1),
            ]
        )
        for placeholder, replacement in replace.items():
            assert len(placeholder) == len(replacement), "a frame's lengths must not change"
            assert placeholder in wire, f"{placeholder!r} is not in the frames"
            wire = wire.replace(placeholder, replacement)
        self._writer.write(wire)
        await self._expect(commands.Basic.Ack)

    async def close(self) -> None:
        self._send(0, commands.Connection.Close(200, "done", 0, 0))
        await self._expect(commands.Connection.CloseOk)
        self._writer.close()

    def _send(self, channel: int, value: Frame) -> None:
        self._writer.write(frame.marshal(value, channel))

    async def _expect(self, kind: type[Frame]) -> Frame:
        async with asyncio.timeout(10):
            while True:
                head = await self._reader.readexactly(7)
                size = int.from_bytes(head[3:7], "big")
                data = head + await self._reader.readexactly(size + 1)
                _, _, value = frame.unmarshal(data)
                if isinstance(value, kind):
                    return value
                if isinstance(value, commands.Connection.Close | commands.Channel.Close):
                    raise AssertionError(f"the broker closed: {value.reply_text}")
