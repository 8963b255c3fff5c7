"""Kubernetes HPA's stabilization window: no reversing a setting's last change too soon."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import ActionKind, EnactmentRecord
from worker.core.config import OptimiserConfig
from worker.core.effects import SCALES, Effect
from worker.core.guards.base import RATE_LIMITED, SUCCESS, Escalation, Guard, Instant, Refusal
from worker.core.guards.tools import EPSILON, PRUNE_AT, factor_moved, setting_moved, span


@dataclass(slots=True)
class _LastMove:
    at: float
    direction: int  # +1 up, -1 down (numeric settings)
    previous: str | None = None  # the version before the last swap (versions)
    current: str | None = None


class Stabilization(Guard):
    """Kubernetes HPA's stabilization window: a change that would reverse the last change of a
    setting (down after up, a swap back to the version before) within
    ``stabilization_window_s`` is RATE_LIMITED."""

    name = "stabilization"
    kinds = SCALES | {ActionKind.HOT_SWAP_MODULE}

    def __init__(self) -> None:
        self._last: dict[str, _LastMove] = {}

    def admit(self, effect: Effect, config: OptimiserConfig, now: Instant) -> Effect | Refusal:
        window = config.stabilization_window_s
        last = self._last.get(effect.setting)
        if window == 0 or last is None or now.monotonic - last.at >= window:
            return effect
        left = window - (now.monotonic - last.at)
        reverses = effect.factor is not None and _direction(effect.factor) == -last.direction
        if reverses and last.direction != 0:
            went = "up" if last.direction > 0 else "down"
            return Refusal(
                self.name,
                RATE_LIMITED,
                f"stabilization: {effect.setting} went {went} at {now.wall_at(last.at)}; "
                f"reversing it is refused for {span(window)} after a change ({left:.0f}s left)",
            )
        if effect.target is not None and effect.target == last.previous:
            went = f"moved from {last.previous} to {last.current} at {now.wall_at(last.at)}"
            why = f"swapping back is refused for {span(window)} after a change ({left:.0f}s left)"
            return Refusal(
                self.name, RATE_LIMITED, f"stabilization: {effect.setting} {went}; {why}"
            )
        return effect

    def learn(
        self, record: EnactmentRecord, at: float, config: OptimiserConfig
    ) -> Escalation | None:
        if record.status is not SUCCESS:
            return None
        setting = setting_moved(record, config)
        kind = record.action.action_kind
        if kind is ActionKind.HOT_SWAP_MODULE:
            before = self._last.get(setting)
            new = record.new if isinstance(record.new, str) else None
            old = record.old if isinstance(record.old, str) else None
            previous = old if old is not None else (before.current if before else None)
            self._last[setting] = _LastMove(at, 0, previous=previous, current=new)
        elif kind in SCALES:
            factor = factor_moved(record, config)
            if factor is not None and _direction(factor) != 0:
                self._last[setting] = _LastMove(at, _direction(factor))
        if len(self._last) > PRUNE_AT:
            cutoff = at - config.stabilization_window_s
            self._last = {k: v for k, v in self._last.items() if v.at >= cutoff}
        return None

    def window_s(self, config: OptimiserConfig) -> float:
        return config.stabilization_window_s

    def reset(self) -> None:
        self._last.clear()


def _direction(factor: float) -> int:
    if factor > 1.0 + EPSILON:
        return 1
    if factor < 1.0 - EPSILON:
        return -1
    return 0
