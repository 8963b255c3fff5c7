"""A TCP proxy in front of the broker that can silence one connection: a network fault."""

from __future__ import annotations

import asyncio
import itertools
from urllib.parse import urlsplit, urlunsplit


class SilencingProxy:
    """Forwards each accepted connection to the broker; ``silence(i)`` drops its bytes."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._numbers = itertools.count()
        self._silenced: set[int] = set()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._refusing = False
        self._writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0
        self.port = 0

    @classmethod
    async def in_front_of(cls, amqp_url: str) -> tuple[SilencingProxy, str]:
        """A started proxy to the broker ``amqp_url`` names, and that URL through the proxy."""
        parts = urlsplit(amqp_url)
        proxy = cls((parts.hostname or "127.0.0.1", parts.port or 5672))
        await proxy.start()
        return proxy, proxy.url_for(amqp_url)

    def url_for(self, amqp_url: str) -> str:
        """``amqp_url`` (its credentials, vhost and query) through this started proxy."""
        parts = urlsplit(amqp_url)
        credentials = parts.netloc.rpartition("@")[0]
        here = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{credentials}@{here}" if credentials else here))

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def silence(self, number: int) -> None:
        """From now on, connection ``number`` (0 = the first accepted) carries nothing."""
        self._silenced.add(number)

    def blackout(self) -> None:
        """The broker is gone: every connection so far goes quiet, new ones are refused."""
        self._silenced.update(range(self.accepted))
        self._refusing = True

    def cut(self) -> None:
        """The broker went away: every connection is closed, new ones are refused."""
        self._refusing = True
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def restore(self) -> None:
        """New connections get through again."""
        self._refusing = False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.close()
            return
        number = next(self._numbers)
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pump = asyncio.create_task(self._pump(number, source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self, number: int, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await source.read(65536):
                if number in self._silenced:
                    continue  # swallowed: to both ends the other one has gone quiet
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if number not in self._silenced:  # a silenced link does not even say goodbye
                sink.close()
