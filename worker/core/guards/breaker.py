"""A circuit breaker per (module, kind), which escalates to a person once."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from schemas import ActionKind, EnactmentRecord
from worker.core.config import OptimiserConfig
from worker.core.effects import CHANGES, Effect
from worker.core.guards.base import FAILED, SKIPPED, SUCCESS, Escalation, Guard, Instant, Refusal
from worker.core.guards.tools import span


@dataclass(slots=True)
class _BreakerState:
    failures: deque[float] = field(default_factory=deque)
    opened: float | None = None  # when it (re)opened; None while closed
    reset_at: float = -math.inf  # failures up to here were forgiven by an operator


@dataclass(frozen=True, slots=True)
class BreakerView:
    """One breaker as people see it."""

    module: str
    action_kind: ActionKind
    state: str  # "open" or "half-open"
    opened_at: str
    until: str


class Breaker(Guard):
    """A circuit breaker per (module, kind): ``breaker_failures`` FAILED within
    ``breaker_window_s`` open it, and one review item says so. While open its actions are
    SKIPPED; after ``breaker_cool_off_s`` one trial goes through (half-open): a SUCCESS closes
    it, a FAILED opens it again (people heard already). No trial within ``breaker_window_s``
    after that closes it too. An operator's reset closes it."""

    name = "breaker"
    kinds = CHANGES

    def __init__(self) -> None:
        self._states: dict[tuple[str, ActionKind], _BreakerState] = {}

    def admit(self, effect: Effect, config: OptimiserConfig, now: Instant) -> Effect | Refusal:
        action = effect.action
        if config.breaker_failures == 0 or action.action_kind not in CHANGES:
            return effect
        state = self._states.get((action.module_name, action.action_kind))
        if state is None or state.opened is None or _stale(state, config, now.monotonic):
            return effect
        until = state.opened + config.breaker_cool_off_s
        if now.monotonic < until:
            return Refusal(
                self.name,
                SKIPPED,
                f"breaker open: {config.breaker_failures} failures in "
                f"{span(config.breaker_window_s)} of {action.action_kind.value} on "
                f"{action.module_name}, until {now.wall_at(until)}",
            )
        return effect.marked(guard=self.name, note="breaker half-open: this is its one trial")

    def learn(
        self, record: EnactmentRecord, at: float, config: OptimiserConfig
    ) -> Escalation | None:
        action = record.action
        if config.breaker_failures == 0 or action.action_kind not in CHANGES:
            return None
        key = (action.module_name, action.action_kind)
        if record.status is SUCCESS:
            self._states.pop(key, None)
            return None
        if record.status is not FAILED:
            return None
        state = self._states.setdefault(key, _BreakerState())
        if at <= state.reset_at:
            return None
        if _stale(state, config, at):
            state.opened = None
        if state.opened is not None or record.guard == self.name:
            # A failed trial (or a late failure while open): open again, quietly.
            state.opened, state.failures = at, deque()
            return None
        state.failures.append(at)
        while state.failures and state.failures[0] < at - config.breaker_window_s:
            state.failures.popleft()
        if len(state.failures) < config.breaker_failures:
            return None
        state.opened, state.failures = at, deque()
        return Escalation(
            self.name,
            record,
            f"circuit breaker opened for {action.action_kind.value} on {action.module_name}: "
            f"{config.breaker_failures} FAILED in {span(config.breaker_window_s)} (last: "
            f"{record.detail}). Its actions are SKIPPED for {span(config.breaker_cool_off_s)}, "
            f"then one trial goes through; `self-optimiser breakers reset "
            f"{action.module_name} {action.action_kind.value}` closes it now",
        )

    def close(self, module: str, kind: ActionKind, at: float) -> None:
        """An operator's reset: closed, and every failure up to ``at`` forgiven."""
        self._states[module, kind] = _BreakerState(reset_at=at)

    def views(self, config: OptimiserConfig, now: Instant) -> list[BreakerView]:
        """The breakers that are not closed."""
        views = []
        for (module, kind), state in sorted(self._states.items()):
            if state.opened is None or _stale(state, config, now.monotonic):
                continue
            until = state.opened + config.breaker_cool_off_s
            views.append(
                BreakerView(
                    module=module,
                    action_kind=kind,
                    state="open" if now.monotonic < until else "half-open",
                    opened_at=now.wall_at(state.opened),
                    until=now.wall_at(until),
                )
            )
        return views

    def known(self) -> Iterator[tuple[str, ActionKind]]:
        """Every (module, kind) that has a breaker state, open or not."""
        return iter(list(self._states))

    def window_s(self, config: OptimiserConfig) -> float:
        return config.breaker_window_s + config.breaker_cool_off_s

    def reset(self) -> None:
        self._states.clear()


def _stale(state: _BreakerState, config: OptimiserConfig, at: float) -> bool:
    """An open breaker whose trial has waited ``breaker_window_s`` after its cool-off with no
    action to try: what opened it lies beyond the guard's window (``window_s``), which is all a
    restart reads again, so it is closed here too, and a restarted worker decides the same."""
    if state.opened is None:
        return False
    return at >= state.opened + config.breaker_cool_off_s + config.breaker_window_s
