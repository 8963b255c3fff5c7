"""Workers as separate processes, started as users start them, for crash and failover tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import ClassVar

from tests.support.paths import ROOT

#: For the fault tests, which count deliveries at a served subsystem: hundreds of changes in a
#: minute are their load, not an attack, so the namespace's change budget must not refuse them.
#: (The hostile-planner tests run with the defaults.)
DELIVERY_ONLY = {"change_budget": "1000000"}


class WorkerProcess:
    """``self-optimiser run`` in a subprocess; its log lines are kept in ``lines``."""

    #: Every one started, so that a failed test leaves none running (see conftest).
    started: ClassVar[list[WorkerProcess]] = []

    def __init__(self, amqp_url: str, namespace: str, **settings: str) -> None:
        self.env = {
            **os.environ,
            "OPTIMISER_AMQP_URL": amqp_url,
            "OPTIMISER_NAMESPACE": namespace,
            "OPTIMISER_METRICS_PORT": "-1",
            **{f"OPTIMISER_{k.upper()}": v for k, v in settings.items()},
        }
        self.lines: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    async def start(self) -> WorkerProcess:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.cli", "run", cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        WorkerProcess.started.append(self)
        return self

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        while line := await self._process.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    async def wait_consuming(self, timeout: float = 30.0) -> None:
        """Until it logs that it consumes plans (as the active or a standby consumer)."""
        async with asyncio.timeout(timeout):
            while not any(" consuming " in line for line in self.lines):
                if self.returncode is not None:
                    raise AssertionError("worker exited:\n" + "\n".join(self.lines[-20:]))
                await asyncio.sleep(0.05)

    def terminate(self) -> None:
        """SIGTERM, without waiting."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no acks, no closing of channels."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)

    async def wait(self, timeout: float = 60.0) -> int:
        assert self._process is not None
        async with asyncio.timeout(timeout):
            code = await self._process.wait()
            if self._reader is not None:
                await self._reader
        return code

    async def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not end in time."""
        if self.returncode is not None:
            return self.returncode
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            self.kill()
            return await self.wait(10)
