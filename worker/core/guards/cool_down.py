"""The seed's cool-down, per setting."""

from __future__ import annotations

import math

from schemas import ActionKind, EnactmentRecord
from worker.core.config import OptimiserConfig
from worker.core.effects import Effect
from worker.core.guards.base import RATE_LIMITED, SUCCESS, Escalation, Guard, Instant, Refusal
from worker.core.guards.tools import PRUNE_AT, setting_moved


class CoolDown(Guard):
    """The seed's cool-down, per setting: a setting that changed less than ``cool_down_s`` ago
    is RATE_LIMITED, whatever module name the new action carries."""

    name = "cool_down"
    kinds = frozenset(ActionKind) - {ActionKind.NO_OP}  # every kind with a setting

    def __init__(self) -> None:
        self._last: dict[str, float] = {}  # setting -> when its last SUCCESS completed

    def admit(self, effect: Effect, config: OptimiserConfig, now: Instant) -> Effect | Refusal:
        if not config.enable_rate_limit or not effect.setting:
            return effect
        last = self._last.get(effect.setting)  # absent: never, however young the host clock
        if last is None:
            return effect
        remaining = config.cool_down_s - (now.monotonic - last)
        if remaining > 0:
            return Refusal(
                self.name,
                RATE_LIMITED,
                f"cool-down active ({config.cool_down_s}s, {remaining:.1f}s left) "
                f"on {effect.setting}",
            )
        return effect

    def learn(
        self, record: EnactmentRecord, at: float, config: OptimiserConfig
    ) -> Escalation | None:
        if record.status is SUCCESS:
            setting = setting_moved(record, config)
            if setting and at > self._last.get(setting, -math.inf):
                self._last[setting] = at
                if len(self._last) > PRUNE_AT:
                    cutoff = at - config.cool_down_s
                    self._last = {k: v for k, v in self._last.items() if v >= cutoff}
        return None

    def window_s(self, config: OptimiserConfig) -> float:
        return config.cool_down_s

    def reset(self) -> None:
        self._last.clear()
