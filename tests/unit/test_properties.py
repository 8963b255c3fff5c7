"""Properties of the gates, for any sequence of actions and clock steps (hypothesis)."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from schemas import (
    ActionKind,
    EnactmentRecord,
    EnactmentStatus,
    ImprovementAction,
    decode_record,
    encode,
)
from schemas.commands import (
    IncreaseBudget,
    SubsystemCommand,
    SwapModule,
    TuneThreshold,
)
from tests.support.subsystems import EveryVerb
from worker import (
    AsyncSelfOptimiser,
    ManualClock,
    OptimiserConfig,
    SubsystemResult,
    Subsystems,
    SubsystemUnavailable,
)

S = EnactmentStatus
#: Each fake subsystem behaves by module: works, refuses, raises, or is not there.
MODULES = ("ok", "refuses", "raises", "absent")
# Hot swaps are drawn more often: their cap only shows with several in one batch.
KINDS = [*ActionKind, ActionKind.HOT_SWAP_MODULE, ActionKind.HOT_SWAP_MODULE]
PARAMETER_VALUES = ("0.1", "-0.4", "1.0", "2", "abc", "nan", "inf", "", "1.5", "4", "0")


@dataclass
class FakeSubsystems(EveryVerb):
    """One object that plays every port and counts every call it gets."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    reviews: list[ImprovementAction] = field(default_factory=list)

    def _answer(self, port: str, module: str) -> SubsystemResult:
        self.calls.append((port, module))
        if module == "refuses":
            return SubsystemResult(False, "refused")
        if module == "raises":
            raise RuntimeError("subsystem crashed")
        if module == "absent":
            raise SubsystemUnavailable("nobody there")
        return SubsystemResult(True, "done")

    async def tune(self, command: SubsystemCommand, request: TuneThreshold) -> SubsystemResult:
        return self._answer("detector", command.module)

    async def increase(self, command: SubsystemCommand, request: IncreaseBudget) -> SubsystemResult:
        return self._answer("budget", command.module)

    async def shed(self, command: SubsystemCommand) -> SubsystemResult:
        return self._answer("load", command.module)

    async def swap(self, command: SubsystemCommand, request: SwapModule) -> SubsystemResult:
        return self._answer("swap", command.module)

    async def submit(
        self, action: ImprovementAction, *, plan_id: str, proceed: object = None
    ) -> None:
        self._answer("review", action.module_name)
        self.reviews.append(action)


@st.composite
def actions(draw: st.DrawFn) -> ImprovementAction:
    kind = draw(st.sampled_from(KINDS))
    keys = draw(st.sets(st.sampled_from(["suggested_delta", "budget_factor", "target_version"])))
    return ImprovementAction(
        action_id=f"a{draw(st.integers(0, 10**9))}",
        module_name=draw(st.sampled_from(MODULES)),
        action_kind=kind,
        parameters={key: draw(st.sampled_from(PARAMETER_VALUES)) for key in keys},
    )


configs = st.builds(
    OptimiserConfig,
    max_enactments_per_cycle=st.integers(1, 6),
    max_hot_swap_per_cycle=st.integers(0, 2),
    cool_down_s=st.sampled_from([0.0, 1.0, 10.0, 60.0]),
    enable_rate_limit=st.booleans(),
    dry_run=st.booleans(),
)
# A step either moves the clock or enacts a batch.
steps = st.lists(
    st.one_of(
        st.floats(0.0, 30.0, allow_nan=False).map(lambda s: ("advance", s)),
        st.lists(actions(), max_size=8).map(lambda batch: ("enact", batch)),
    ),
    max_size=12,
)


async def _run(
    config: OptimiserConfig, script: list[tuple[str, object]]
) -> tuple[FakeSubsystems, list[tuple[float, list[ImprovementAction], list[EnactmentRecord], int]]]:
    clock = ManualClock()
    fakes = FakeSubsystems()
    optimiser = AsyncSelfOptimiser(
        subsystems=Subsystems(detector=fakes, budget=fakes, load=fakes, orchestrator=fakes),
        review=fakes,
        config=config,
        clock=clock,
    )
    calls = []
    for step, value in script:
        if step == "advance":
            assert isinstance(value, float)
            clock.advance(value)
            continue
        assert isinstance(value, list)
        swaps_before = sum(1 for port, _ in fakes.calls if port == "swap")
        records = await optimiser.enact(value)  # never raises: any exception fails the test
        swaps = sum(1 for port, _ in fakes.calls if port == "swap") - swaps_before
        calls.append((clock.monotonic(), value, records, swaps))
    return fakes, calls


@given(configs, steps)
def test_gates_hold_for_any_sequence(
    config: OptimiserConfig, script: list[tuple[str, object]]
) -> None:
    fakes, calls = asyncio.run(_run(config, script))
    successes: dict[tuple[str, str], list[float]] = defaultdict(list)

    for at, batch, records, swaps in calls:
        # Records never exceed the cap, and are one per action, in order, from the first.
        assert len(records) == min(len(batch), config.max_enactments_per_cycle)
        assert [r.action for r in records] == batch[: len(records)]
        # Hot swaps handed to the orchestrator never exceed their cap.
        assert swaps <= config.max_hot_swap_per_cycle
        for record in records:
            assert decode_record(encode(record)) == record  # every record is wire-valid
            if record.status is S.SUCCESS:
                successes[record.action.module_name, record.action.action_kind].append(at)

    if config.enable_rate_limit:
        # No (module, kind) succeeds twice within cool_down_s.
        for times in successes.values():
            assert all(b - a >= config.cool_down_s for a, b in itertools.pairwise(times))
    if config.dry_run:
        # Dry-run never touches a subsystem, the review sink included.
        assert fakes.calls == []
        assert all(r.status is S.SKIPPED for _, _, records, _ in calls for r in records)


@given(configs, st.lists(actions(), max_size=8))
def test_stats_count_every_record(config: OptimiserConfig, batch: list[ImprovementAction]) -> None:
    async def scenario() -> tuple[list[EnactmentRecord], dict[str, int]]:
        fakes = FakeSubsystems()
        optimiser = AsyncSelfOptimiser(
            subsystems=Subsystems(detector=fakes, budget=fakes, load=fakes, orchestrator=fakes),
            review=fakes,
            config=config,
            clock=ManualClock(),
        )
        records = await optimiser.enact(batch)
        return records, await optimiser.stats()

    records, stats = asyncio.run(scenario())
    by_status = {
        "enacted": S.SUCCESS,
        "failed": S.FAILED,
        "skipped": S.SKIPPED,
        "rate_limited": S.RATE_LIMITED,
    }
    for key, status in by_status.items():
        assert stats.get(key, 0) == sum(1 for r in records if r.status is status)
    assert stats["enact_calls"] == 1
