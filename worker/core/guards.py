"""Guardrails: small objects of one shape that refuse or trim an action before it is dispatched.

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

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final

from schemas import ActionKind, EnactmentRecord, EnactmentStatus
from worker.core.config import OptimiserConfig
from worker.core.effects import CHANGES, SCALES, Effect, effect_of, setting_of

SUCCESS = EnactmentStatus.SUCCESS
FAILED = EnactmentStatus.FAILED
SKIPPED = EnactmentStatus.SKIPPED
RATE_LIMITED = EnactmentStatus.RATE_LIMITED
#: The only records any guard learns from (``learn`` ignores the others): a checkpoint of the
#: state log keeps just these of the guards' window, and learning them rebuilds every guard.
LEARNED_FROM: Final = frozenset({SUCCESS, FAILED})
#: A move closer to 1 than this is no move at all (floating point after a trim).
_EPSILON: Final = 1e-9
#: Past this many keys a guard drops the ones whose state has expired (a planner inventing
#: module names must not grow the worker's memory without end).
_PRUNE_AT: Final = 10_000


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
    #: (``tests/test_guard_properties.py`` tries to break that).
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


def span(seconds: float) -> str:
    """``600`` -> "10 min", ``45`` -> "45s": how people say a window."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g}s"


def setting_moved(record: EnactmentRecord, config: OptimiserConfig) -> str:
    """The setting a record's action moved (older records do not carry it)."""
    return record.setting or setting_of(record.action, config)


def factor_moved(record: EnactmentRecord, config: OptimiserConfig) -> float | None:
    """How far a SUCCESS moved its numeric setting: new / old as the subsystem reported them,
    else (a subsystem that does not say) the factor the action asked for."""
    old, new = record.old, record.new
    if isinstance(old, float) and isinstance(new, float) and old > 0 and new > 0:
        return new / old
    return effect_of(record.action, config).factor


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
                if len(self._last) > _PRUNE_AT:
                    cutoff = at - config.cool_down_s
                    self._last = {k: v for k, v in self._last.items() if v >= cutoff}
        return None

    def window_s(self, config: OptimiserConfig) -> float:
        return config.cool_down_s

    def reset(self) -> None:
        self._last.clear()


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


class NoChange(Guard):
    """A move by a factor of exactly 1 changes nothing: SKIPPED, and it arms nothing."""

    name = "no_change"
    kinds = SCALES

    def admit(self, effect: Effect, config: OptimiserConfig, now: Instant) -> Effect | Refusal:
        if effect.factor == 1.0:
            return Refusal(self.name, SKIPPED, f"no change: {effect.setting} would stay as it is")
        return effect


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
            return Refusal(
                self.name,
                RATE_LIMITED,
                f"stabilization: {effect.setting} moved from {last.previous} to "
                f"{last.current} at {now.wall_at(last.at)}; swapping back is refused for "
                f"{span(window)} after a change ({left:.0f}s left)",
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
        elif kind in (ActionKind.TUNE_THRESHOLD, ActionKind.INCREASE_BUDGET):
            factor = factor_moved(record, config)
            if factor is not None and _direction(factor) != 0:
                self._last[setting] = _LastMove(at, _direction(factor))
        if len(self._last) > _PRUNE_AT:
            cutoff = at - config.stabilization_window_s
            self._last = {k: v for k, v in self._last.items() if v.at >= cutoff}
        return None

    def window_s(self, config: OptimiserConfig) -> float:
        return config.stabilization_window_s

    def reset(self) -> None:
        self._last.clear()


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
        if (factor > 1.0 and limit <= 1.0 + _EPSILON) or (factor < 1.0 and limit >= 1.0 - _EPSILON):
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
        if record.status is not SUCCESS or record.action.action_kind not in (
            ActionKind.TUNE_THRESHOLD,
            ActionKind.INCREASE_BUDGET,
        ):
            return None
        factor = factor_moved(record, config)
        if factor is not None and abs(factor - 1.0) > _EPSILON:
            setting = setting_moved(record, config)
            self._moves.setdefault(setting, deque()).append((at, factor))
            if len(self._moves) > _PRUNE_AT:
                cutoff = at - config.bound_period_s
                self._moves = {k: v for k, v in self._moves.items() if v and v[-1][0] >= cutoff}
        return None

    def window_s(self, config: OptimiserConfig) -> float:
        return config.bound_period_s

    def reset(self) -> None:
        self._moves.clear()


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
        if record.action.action_kind in self.kinds and record.status in (SUCCESS, FAILED):
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


def build_guards() -> list[Guard]:
    """A fresh set of guards, in the order they apply (after the pause and the per-call cap):
    the seed's cool-down and hot-swap cap first, as they always were, then the new ones."""
    return [
        CoolDown(),
        HotSwapCap(),
        NoChange(),
        Breaker(),
        Stabilization(),
        Bound(),
        SwapBudget(),
        ChangeBudget(),
    ]


def state_window_s(config: OptimiserConfig) -> float:
    """How far back the guards' state reaches: what a restart must read again."""
    return max(guard.window_s(config) for guard in build_guards())


def _direction(factor: float) -> int:
    if factor > 1.0 + _EPSILON:
        return 1
    if factor < 1.0 - _EPSILON:
        return -1
    return 0
