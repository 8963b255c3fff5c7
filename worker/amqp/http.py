"""A small HTTP server on the event loop: ``/metrics``, ``/healthz`` (alive), ``/readyz``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

#: (ready, why): why is shown on /readyz either way.
Readiness = Callable[[], tuple[bool, str]]

_REQUEST_TIMEOUT_S: Final = 5.0  # for the whole exchange, the slow reader included
_MAX_CONNECTIONS: Final = 32
_MAX_HEADER_LINES: Final = 100
_REASONS: Final = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class HealthServer:
    """Serves the three endpoints until closed; answers one request per connection."""

    def __init__(self, registry: CollectorRegistry, readiness: Readiness) -> None:
        self._registry = registry
        self._readiness = readiness
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(_MAX_CONNECTIONS)

    async def start(self, host: str, port: int) -> int:
        """Start listening; return the port (useful when ``port`` is 0)."""
        self._server = await asyncio.start_server(self._serve, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():  # too many at once: answer nothing rather than queue up
            writer.close()
            return
        try:
            async with self._slots, asyncio.timeout(_REQUEST_TIMEOUT_S):
                request_line = await reader.readline()
                for _ in range(_MAX_HEADER_LINES):  # headers: nothing here needs them
                    if (await reader.readline()) in (b"\r\n", b"\n", b""):
                        break
                parts = request_line.decode("latin-1").split()
                method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
                status, content_type, body = self._answer(method, path)
                head = (
                    f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError) as exc:
            log.debug("health request dropped: %s", exc)
        finally:
            writer.close()

    def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, text, b"only GET\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/healthz":
            return 200, text, b"ok\n"
        if path == "/readyz":
            ready, why = self._readiness()
            return (200 if ready else 503), text, f"{why}\n".encode()
        return 404, text, b"try /metrics, /healthz or /readyz\n"
