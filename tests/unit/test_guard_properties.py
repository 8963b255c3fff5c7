"""Hostile planners, generated (hypothesis, injected clock): whatever the sequence of actions,
module names, parameters, failures and pauses in time, under the default guardrails

- a setting never moves more than ``bound_factor`` within any ``bound_period_s``,
- never reverses inside its stabilization window,
- hot swaps and changes stay within their budgets in every window,
- a module that keeps failing opens its breaker after K failures, people hear once, and it is
  not dispatched again before its cool-off,
- and a fresh optimiser that learns the records decides exactly as the one that made them.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from schemas import ActionKind, EnactmentRecord, ImprovementAction
from schemas import commands as wire
from tests.support.subsystems import EveryVerb
from worker import AsyncSelfOptimiser, ManualClock, OptimiserConfig, SubsystemResult, Subsystems
from worker.core.effects import effect_of
from worker.core.guards import LEARNED_FROM, Instant

K = ActionKind
#: A hostile planner invents module names; two of them always fail.
MODULES = [f"m{i}" for i in range(8)] + ["bad1", "bad2"]
FAILING = {"bad1", "bad2"}
DELTAS = ["1.0", "0.5", "0.3", "0.1", "-0.1", "-0.3", "-0.5", "0", "x"]
FACTORS = ["4", "2", "1.5", "1.1", "1"]
VERSIONS = ["v1", "v2", "v3"]
EPSILON = 1e-6


@dataclass
class World(EveryVerb):
    """The subsystems, with real state, and a log of every call that reached them."""

    clock: ManualClock
    threshold: float = 200.0
    budgets: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    moves: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    dispatched: list[tuple[float, str, ActionKind]] = field(default_factory=list)
    reviews: list[tuple[float, ImprovementAction]] = field(default_factory=list)

    def _reach(self, module: str, kind: ActionKind) -> bool:
        self.dispatched.append((self.clock.monotonic(), module, kind))
        return module not in FAILING

    def _moved(self, setting: str, old: float, new: float) -> None:
        self.moves.setdefault(setting, []).append((self.clock.monotonic(), old, new))

    async def tune(
        self, command: wire.SubsystemCommand, request: wire.TuneThreshold
    ) -> SubsystemResult:
        if not self._reach(command.module, K.TUNE_THRESHOLD):
            return SubsystemResult(False, "refused")
        old = self.threshold
        self.threshold = min(request.ceiling_ms, max(request.floor_ms, old * (1 + request.delta)))
        self._moved("threshold", old, self.threshold)
        return SubsystemResult(
            True, "tuned", wire.ThresholdChange(old_ms=old, new_ms=self.threshold)
        )

    async def increase(
        self, command: wire.SubsystemCommand, request: wire.IncreaseBudget
    ) -> SubsystemResult:
        if not self._reach(command.module, K.INCREASE_BUDGET):
            return SubsystemResult(False, "refused")
        old = self.budgets.get(command.module, request.default_s)
        new = min(request.ceiling_s, max(request.floor_s, old * request.factor))
        self.budgets[command.module] = new
        self._moved(f"budget:{command.module}", old, new)
        return SubsystemResult(True, "raised", wire.BudgetChange(old_s=old, new_s=new))

    async def shed(self, command: wire.SubsystemCommand) -> SubsystemResult:
        ok = self._reach(command.module, K.REDUCE_LOAD)
        return SubsystemResult(ok, "shed" if ok else "refused")

    async def swap(
        self, command: wire.SubsystemCommand, request: wire.SwapModule
    ) -> SubsystemResult:
        if not self._reach(command.module, K.HOT_SWAP_MODULE):
            return SubsystemResult(False, "rolled back")
        self.versions[command.module] = request.target_version
        change = wire.SwapChange(outcome="SUCCESS", version=request.target_version)
        return SubsystemResult(True, "swapped", change)

    async def submit(
        self, action: ImprovementAction, *, plan_id: str, proceed: object = None
    ) -> None:
        self.reviews.append((self.clock.monotonic(), action))


@st.composite
def hostile_actions(draw: st.DrawFn) -> ImprovementAction:
    kind = draw(
        st.sampled_from(
            [
                K.TUNE_THRESHOLD,
                K.TUNE_THRESHOLD,
                K.INCREASE_BUDGET,
                K.HOT_SWAP_MODULE,
                K.HOT_SWAP_MODULE,
                K.REDUCE_LOAD,
                K.NO_OP,
            ]
        )
    )
    parameters = {}
    if kind is K.TUNE_THRESHOLD:
        parameters["suggested_delta"] = draw(st.sampled_from(DELTAS))
    elif kind is K.INCREASE_BUDGET:
        parameters["budget_factor"] = draw(st.sampled_from(FACTORS))
    elif kind is K.HOT_SWAP_MODULE:
        parameters["target_version"] = draw(st.sampled_from(VERSIONS))
    return ImprovementAction(
        action_id=f"a{draw(st.integers(0, 10**12))}",
        # A third of the actions go to the modules that always fail, so breakers open often.
        module_name=draw(st.sampled_from([*MODULES, *sorted(FAILING) * 2])),
        action_kind=kind,
        parameters=parameters,
    )


steps = st.lists(
    st.one_of(
        st.sampled_from([1.0, 30.0, 120.0, 299.0, 301.0, 599.0, 600.0, 1200.0]).map(
            lambda s: ("advance", s)
        ),
        st.lists(hostile_actions(), min_size=1, max_size=10).map(lambda b: ("enact", b)),
    ),
    min_size=1,
    max_size=40,
)
#: The defaults, with a cool-down from none (the hostile extreme) to the default's 300 s.
configs = st.builds(
    OptimiserConfig,
    cool_down_s=st.sampled_from([0.0, 60.0, 300.0]),
    max_enactments_per_cycle=st.just(10),
    max_hot_swap_per_cycle=st.sampled_from([1, 10]),
)


async def _play(
    config: OptimiserConfig, script: list[tuple[str, object]]
) -> tuple[World, AsyncSelfOptimiser, list[EnactmentRecord]]:
    clock = ManualClock()
    world = World(clock)
    ports = Subsystems(detector=world, budget=world, load=world, orchestrator=world)
    optimiser = AsyncSelfOptimiser(subsystems=ports, review=world, config=config, clock=clock)
    records: list[EnactmentRecord] = []
    for step, value in script:
        if step == "advance":
            assert isinstance(value, float)
            clock.advance(value)
        else:
            assert isinstance(value, list)
            records += await optimiser.enact(value)
    return world, optimiser, records


def _within(times: list[float], at: float, window: float) -> int:
    return sum(1 for t in times if at - window < t <= at)


@given(configs, steps)
def test_the_worst_plan_can_do_only_so_much(
    config: OptimiserConfig, script: list[tuple[str, object]]
) -> None:
    world, _, _ = asyncio.run(_play(config, script))

    for moves in world.moves.values():
        for at, _, _ in moves:
            # Within any period, the setting moved at most bound_factor either way.
            recent = [new / old for t, old, new in moves if at - config.bound_period_s < t <= at]
            moved = math.prod(recent)
            assert 1 / config.bound_factor - EPSILON <= moved <= config.bound_factor + EPSILON
        # It never reverses its last change inside the stabilization window.
        real = [(t, new / old) for t, old, new in moves if abs(new / old - 1) > EPSILON]
        for (t1, f1), (t2, f2) in itertools.pairwise(real):
            if (f1 > 1) != (f2 > 1):
                assert t2 - t1 >= config.stabilization_window_s

    swaps = [t for t, _, kind in world.dispatched if kind is K.HOT_SWAP_MODULE]
    changes = [t for t, _, _ in world.dispatched]
    for at in swaps:
        assert _within(swaps, at, config.swap_budget_window_s) <= config.swap_budget
    for at in changes:
        assert _within(changes, at, config.change_budget_window_s) <= config.change_budget


@given(configs, steps)
def test_a_failing_module_escalates_once_and_rests(
    config: OptimiserConfig, script: list[tuple[str, object]]
) -> None:
    world, _, _ = asyncio.run(_play(config, script))

    openings: dict[tuple[str, str], list[float]] = defaultdict(list)
    for at, item in world.reviews:
        openings[item.module_name, item.parameters["action_kind"]].append(at)
    attempts: dict[tuple[str, str], list[float]] = defaultdict(list)
    for t, module, kind in world.dispatched:
        attempts[module, kind.value].append(t)

    for key, times in attempts.items():
        if key[0] not in FAILING:
            assert key not in openings  # a module that works never opens a breaker
            continue
        # These modules always fail: people hear once for as long as it goes on. Heard again
        # only after the breaker rested untried past its cool-off and window: it closed then,
        # as a restarted worker, which reads only that window again, sees it.
        rest = config.breaker_cool_off_s + config.breaker_window_s
        for first, second in itertools.pairwise(openings[key]):
            between = [first, *(t for t in times if first < t <= second)]
            assert any(b - a >= rest for a, b in itertools.pairwise(between))
        opened = [
            b
            for a, b in zip(times, times[config.breaker_failures - 1 :], strict=False)
            if b - a <= config.breaker_window_s
        ]
        if opened:
            assert openings[key]
            first_open = opened[0]
            # Rested for its cool-off after opening (then one trial at a time).
            after = [t for t in times if t > first_open]
            if after:
                assert after[0] - first_open >= config.breaker_cool_off_s


@given(configs, steps, st.lists(hostile_actions(), min_size=1, max_size=10))
def test_a_standby_that_learns_the_records_decides_the_same(
    config: OptimiserConfig, script: list[tuple[str, object]], probe: list[ImprovementAction]
) -> None:
    mine, theirs = asyncio.run(_learnt(config, script, probe, lambda record: True))
    assert mine == theirs


@given(configs, steps, st.lists(hostile_actions(), min_size=1, max_size=10))
def test_the_records_a_checkpoint_keeps_are_all_the_guards_need(
    config: OptimiserConfig, script: list[tuple[str, object]], probe: list[ImprovementAction]
) -> None:
    """A checkpoint keeps only the records of ``LEARNED_FROM``: learning those decides as
    learning every record does."""
    mine, theirs = asyncio.run(_learnt(config, script, probe, lambda r: r.status in LEARNED_FROM))
    assert mine == theirs


async def _learnt(
    config: OptimiserConfig,
    script: list[tuple[str, object]],
    probe: list[ImprovementAction],
    kept: Callable[[EnactmentRecord], bool],
) -> tuple[list[str], list[str]]:
    """What the active optimiser and a standby that learnt the ``kept`` records decide."""
    world, active, records = await _play(config, script)
    standby = AsyncSelfOptimiser(
        subsystems=Subsystems(detector=world, budget=world, load=world, orchestrator=world),
        review=world,
        config=config,
        clock=world.clock,
    )
    for record in records:
        if kept(record):
            standby.learn(record)
    dry = OptimiserConfig(
        cool_down_s=config.cool_down_s,
        max_enactments_per_cycle=config.max_enactments_per_cycle,
        max_hot_swap_per_cycle=config.max_hot_swap_per_cycle,
        dry_run=True,
    )
    mine = await active.enact(probe, config=dry)
    theirs = await standby.enact(probe, config=dry)
    return [r.detail for r in mine], [r.detail for r in theirs]


@given(configs, steps, st.lists(hostile_actions(), min_size=1, max_size=10))
def test_a_guard_concerns_no_kind_beyond_its_kinds(
    config: OptimiserConfig, script: list[tuple[str, object]], probe: list[ImprovementAction]
) -> None:
    """The optimiser asks each guard only of its ``kinds``: after any history, every guard
    lets an action of another kind through untouched."""
    world, optimiser, _ = asyncio.run(_play(config, script))
    now = Instant(world.clock.monotonic(), world.clock.now())
    every_kind = [
        ImprovementAction(action_id=f"k-{kind.value}-{action.action_id}",
                          module_name=action.module_name, action_kind=kind,
                          parameters=action.parameters if kind is action.action_kind else {})
        for action in probe
        for kind in ActionKind
    ]  # fmt: skip
    for action in every_kind:
        effect = effect_of(action, config)
        for guard in optimiser.guards:
            if action.action_kind not in guard.kinds:
                assert guard.admit(effect, config, now) is effect, (guard.name, action)
