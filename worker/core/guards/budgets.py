"""Cloud Custodian's max-resources: budgets of changes per sliding window, across modules."""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from schemas import ActionKind, EnactmentRecord
from worker.core.config import OptimiserConfig
from worker.core.effects import CHANGES, Effect
from worker.core.guards.base import LEARNED_FROM, RATE_LIMITED, Escalation, Guard, Instant, Refusal
from worker.core.guards.tools import span


class _WindowBudget(Guard):
    """At most ``limit`` actions of some kinds (SUCCESS or FAILED: tried is what counts) within
    a sliding window, across every module (Cloud Custodian's ``max-resources``)."""

    what: ClassVar[str]

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def settings(self, config: OptimiserConfig) -> tuple[int, float]:
        """(limit, window) from ``config``."""
        raise NotImplementedError

    def admit(self, effect: Effect, config: OptimiserConfig, now: Instant) -> Effect | Refusal:
        limit, window = self.settings(config)
        if window == 0 or effect.action.action_kind not in self.kinds:
            return effect
        self._expire(now.monotonic - window)
        if len(self._times) < limit:
            return effect
        next_at = self._times[0] + window if self._times else now.monotonic + window
        return Refusal(
            self.name,
            RATE_LIMITED,
            f"{self.name.replace('_', ' ')}: {len(self._times)} {self.what} in the last "
            f"{span(window)} (at most {limit}); next allowed at {now.wall_at(next_at)}",
        )

    def _expire(self, since: float) -> None:
        while self._times and self._times[0] <= since:
            self._times.popleft()

    def learn(
        self, record: EnactmentRecord, at: float, config: OptimiserConfig
    ) -> Escalation | None:
        if record.action.action_kind in self.kinds and record.status in LEARNED_FROM:
            self._times.append(at)
            self._expire(at - self.settings(config)[1])
        return None

    def window_s(self, config: OptimiserConfig) -> float:
        return self.settings(config)[1]

    def reset(self) -> None:
        self._times.clear()


class SwapBudget(_WindowBudget):
    """At most ``swap_budget`` hot swaps per ``swap_budget_window_s``, across modules."""

    name = "swap_budget"
    kinds = frozenset({ActionKind.HOT_SWAP_MODULE})
    what = "hot swaps"

    def settings(self, config: OptimiserConfig) -> tuple[int, float]:
        return config.swap_budget, config.swap_budget_window_s


class ChangeBudget(_WindowBudget):
    """At most ``change_budget`` changes of any kind per ``change_budget_window_s``."""

    name = "change_budget"
    kinds = CHANGES
    what = "changes"

    def settings(self, config: OptimiserConfig) -> tuple[int, float]:
        return config.change_budget, config.change_budget_window_s
