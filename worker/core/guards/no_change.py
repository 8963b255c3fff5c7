"""A move that changes nothing is no move."""

from __future__ import annotations

from worker.core.config import OptimiserConfig
from worker.core.effects import SCALES, Effect
from worker.core.guards.base import SKIPPED, Guard, Instant, Refusal


class NoChange(Guard):
    """A move by a factor of exactly 1 changes nothing: SKIPPED, and it arms nothing."""

    name = "no_change"
    kinds = SCALES

    def admit(self, effect: Effect, config: OptimiserConfig, now: Instant) -> Effect | Refusal:
        if effect.factor == 1.0:
            return Refusal(self.name, SKIPPED, f"no change: {effect.setting} would stay as it is")
        return effect
