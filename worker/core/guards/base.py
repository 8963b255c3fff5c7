"""The shape every guardrail has: small objects that refuse or trim an action before it goes out.

Each answers "what can the worst plan do in the next ten minutes?" for one kind of harm, and
keys on the setting an action moves (``worker.core.effects``), never only on the module name the
planner wrote. A guard has the same few hooks as dramatiq's middleware, each doing nothing by
default, so the next guardrail is one class and its settings:

- ``begin()``: a new ``enact()`` call starts (for the seed's per-call caps);
- ``admit(effect, config, now)``: the effect, perhaps trimmed, or a ``Refusal`` with a reason;
- ``learn(record, at, config)``: take in one record that completed at ``at`` (monotonic); the
  same path serves ``enact()`` and the state stream, so a restart or a standby rebuilds exactly
  the state the active optimiser had. A guard may answer with an ``Escalation``: something a
  person must hear about once (a breaker opened);
- ``window_s(config)``: how far back its state reaches, which is what a restart must read again.

Nothing here does I/O or knows of AMQP; time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final

from schemas import ActionKind, EnactmentRecord, EnactmentStatus
from worker.core.config import OptimiserConfig
from worker.core.effects import Effect

SUCCESS = EnactmentStatus.SUCCESS
FAILED = EnactmentStatus.FAILED
SKIPPED = EnactmentStatus.SKIPPED
RATE_LIMITED = EnactmentStatus.RATE_LIMITED
#: The only records any guard learns from (``learn`` ignores the others): a checkpoint of the
#: state log keeps just these of the guards' window, and learning them rebuilds every guard.
LEARNED_FROM: Final = frozenset({SUCCESS, FAILED})


@dataclass(frozen=True, slots=True)
class Instant:
    """One moment on both clocks: monotonic for arithmetic, wall for what people read."""

    monotonic: float
    wall: datetime

    def wall_at(self, monotonic: float) -> str:
        """The wall-clock time of ``monotonic``, as UTC ISO 8601 with its ``Z``."""
        at = self.wall + timedelta(seconds=monotonic - self.monotonic)
        return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Refusal:
    """An action a guard will not let through: its record's status and detail."""

    guard: str
    status: EnactmentStatus
    detail: str


@dataclass(frozen=True, slots=True)
class Escalation:
    """What a person must hear about once (a breaker opened), and the record that caused it."""

    guard: str
    record: EnactmentRecord
    detail: str


class Guard:
    """Base of every guardrail: hooks that do nothing (see the module docstring)."""

    name: ClassVar[str] = "guard"
    #: The kinds of action it may refuse, trim or mark: ``admit`` is asked of no other, which
    #: spares every action the calls of the guards it cannot concern
    #: (``tests/unit/test_guard_properties.py`` tries to break that).
    kinds: ClassVar[frozenset[ActionKind]] = frozenset(ActionKind)

    def begin(self) -> None:
        """A new ``enact()`` call starts."""

    def admit(self, effect: Effect, config: OptimiserConfig, now: Instant) -> Effect | Refusal:
        """Let ``effect`` through (perhaps trimmed), or refuse it."""
        return effect

    def learn(
        self, record: EnactmentRecord, at: float, config: OptimiserConfig
    ) -> Escalation | None:
        """Take in one record (never a replay) that completed at monotonic time ``at``."""
        return None

    def window_s(self, config: OptimiserConfig) -> float:
        """How far back (seconds) the records this guard's state depends on reach."""
        return 0.0

    def reset(self) -> None:
        """Forget everything."""
