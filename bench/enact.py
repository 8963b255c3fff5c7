"""In-process ``enact()`` throughput: NO_OP and TUNE_THRESHOLD through the seed's adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from bench.stats import Measurement, alternate
from schemas import ActionKind, ImprovementAction
from worker import AsyncSelfOptimiser, OptimiserConfig, OptimiserMetrics
from worker.demo.simulated import SimulatedCycle

ACTIONS = 20_000


def _actions(kind: ActionKind, count: int) -> list[ImprovementAction]:
    return [
        ImprovementAction(
            action_id=f"a{i}",
            module_name=f"module.{i % 50}",
            action_kind=kind,
            parameters={"suggested_delta": "0.01"} if kind is ActionKind.TUNE_THRESHOLD else {},
        )
        for i in range(count)
    ]


def _candidate(
    runner: asyncio.Runner, kind: ActionKind, *, batch: int, metrics: bool
) -> Callable[[], int]:
    # The cool-down is off so every TUNE_THRESHOLD really reaches the cycle.
    config = OptimiserConfig(max_enactments_per_cycle=batch, enable_rate_limit=False)
    cycle = SimulatedCycle()
    optimiser = AsyncSelfOptimiser(
        cognitive_cycle=cycle,
        config=config,
        metrics=OptimiserMetrics(CollectorRegistry()) if metrics else None,
    )
    batches = _split(_actions(kind, ACTIONS), batch)

    async def enact_all() -> int:
        done = 0
        for chunk in batches:
            done += len(await optimiser.enact(chunk, plan_id="bench"))
        return done

    def run() -> int:
        done = runner.run(enact_all())
        assert done == ACTIONS, f"enacted {done} of {ACTIONS}"
        return done

    return run


def _split(actions: list[ImprovementAction], size: int) -> list[list[ImprovementAction]]:
    return [actions[i : i + size] for i in range(0, len(actions), size)]


def measure(rounds: int) -> list[Measurement]:
    with asyncio.Runner() as runner:
        candidates = {
            "NO_OP, plans of 10, metrics on": _candidate(
                runner, ActionKind.NO_OP, batch=10, metrics=True
            ),
            "NO_OP, plans of 10, no metrics": _candidate(
                runner, ActionKind.NO_OP, batch=10, metrics=False
            ),
            "NO_OP, plans of 1000, metrics on": _candidate(
                runner, ActionKind.NO_OP, batch=1000, metrics=True
            ),
            "TUNE_THRESHOLD, plans of 10, metrics on": _candidate(
                runner, ActionKind.TUNE_THRESHOLD, batch=10, metrics=True
            ),
        }
        return alternate(candidates, rounds=rounds, unit="actions")
