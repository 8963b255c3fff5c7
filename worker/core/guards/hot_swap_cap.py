"""The seed's per-call cap on hot swaps."""

from __future__ import annotations

from schemas import ActionKind
from worker.core.config import OptimiserConfig
from worker.core.effects import Effect
from worker.core.guards.base import SKIPPED, Guard, Instant, Refusal


class HotSwapCap(Guard):
    """The seed's per-call cap: at most ``max_hot_swap_per_cycle`` swaps per ``enact()``."""

    name = "hot_swap_cap"
    kinds = frozenset({ActionKind.HOT_SWAP_MODULE})

    def __init__(self) -> None:
        self._count = 0

    def begin(self) -> None:
        self._count = 0

    def admit(self, effect: Effect, config: OptimiserConfig, now: Instant) -> Effect | Refusal:
        if effect.action.action_kind is not ActionKind.HOT_SWAP_MODULE:
            return effect
        if self._count >= config.max_hot_swap_per_cycle:
            return Refusal(self.name, SKIPPED, "hot-swap cap reached for this cycle")
        self._count += 1
        return effect
