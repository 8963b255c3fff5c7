"""Time, injected: a monotonic clock for durations and cool-downs, a UTC wall clock for records."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the optimiser reads the time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""
        ...

    def now(self) -> datetime:
        """The current UTC wall-clock time, timezone-aware."""
        ...


class SystemClock:
    """The host's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to; for tests and simulations.

    It starts at monotonic 0.0, like a freshly booted host, which is exactly where the
    reference implementation rate-limited the first action by mistake.
    """

    def __init__(
        self, *, monotonic: float = 0.0, now: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._monotonic = monotonic
        self._now = now

    def monotonic(self) -> float:
        return self._monotonic

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._monotonic += seconds
        self._now += timedelta(seconds=seconds)
