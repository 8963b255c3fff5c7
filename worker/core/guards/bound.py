"""Kubernetes HPA's scaling policy: a numeric setting moves at most a factor per period."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from schemas import EnactmentRecord
from worker.core.config import OptimiserConfig
from worker.core.effects import SCALES, Effect
from worker.core.guards.base import RATE_LIMITED, SUCCESS, Escalation, Guard, Instant, Refusal
from worker.core.guards.tools import EPSILON, PRUNE_AT, factor_moved, setting_moved, span


class Bound(Guard):
    """Kubernetes HPA's scaling policy per setting: within any ``bound_period_s`` a numeric
    setting moves at most ``bound_factor`` up or down. A larger move is trimmed to what is left
    (the record says so); when nothing is left in its direction it is RATE_LIMITED."""

    name = "bound"
    kinds = SCALES

    def __init__(self) -> None:
        self._moves: dict[str, deque[tuple[float, float]]] = {}  # setting -> (at, factor)

    def admit(self, effect: Effect, config: OptimiserConfig, now: Instant) -> Effect | Refusal:
        factor, period = effect.factor, config.bound_period_s
        if factor is None or period == 0:
            return effect
        moves = self._recent(effect.setting, now.monotonic - period)
        moved = math.prod(f for _, f in moves)
        high, low = config.bound_factor / moved, 1.0 / (config.bound_factor * moved)
        if factor > 1.0 and factor > high:
            limit = high
        elif factor < 1.0 and factor < low:
            limit = low
        else:
            return effect
        if (factor > 1.0 and limit <= 1.0 + EPSILON) or (factor < 1.0 and limit >= 1.0 - EPSILON):
            way = "up" if factor > 1 else "down"
            until = now.wall_at(moves[0][0] + period) if moves else now.wall_at(now.monotonic)
            return Refusal(
                self.name,
                RATE_LIMITED,
                f"bound: {effect.setting} moved x{moved:.3g} in the last {span(period)} (at "
                f"most x{config.bound_factor:g} either way); nothing left {way} until {until}",
            )
        return effect.scaled(
            limit,
            guard=self.name,
            note=f"trimmed by bound: asked x{factor:.3g}, moving x{limit:.3g} (at most "
            f"x{config.bound_factor:g} per {span(period)})",
        )

    def _recent(self, setting: str, since: float) -> Sequence[tuple[float, float]]:
        moves = self._moves.get(setting)
        if moves is None:
            return ()
        while moves and moves[0][0] <= since:
            moves.popleft()
        return moves

    def learn(
        self, record: EnactmentRecord, at: float, config: OptimiserConfig
    ) -> Escalation | None:
        if record.status is not SUCCESS or record.action.action_kind not in SCALES:
            return None
        factor = factor_moved(record, config)
        if factor is not None and abs(factor - 1.0) > EPSILON:
            setting = setting_moved(record, config)
            self._moves.setdefault(setting, deque()).append((at, factor))
            if len(self._moves) > PRUNE_AT:
                cutoff = at - config.bound_period_s
                self._moves = {k: v for k, v in self._moves.items() if v and v[-1][0] >= cutoff}
        return None

    def window_s(self, config: OptimiserConfig) -> float:
        return config.bound_period_s

    def reset(self) -> None:
        self._moves.clear()
