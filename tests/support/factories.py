"""What tests build their inputs from: actions, plans, the example plan, and a poll."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from schemas import ActionKind, ImprovementAction
from tests.support.paths import ROOT

#: The example plan of ``examples/plan.json``, one action of every kind: its path and its bytes.
EXAMPLE_PLAN_PATH = ROOT / "examples" / "plan.json"
EXAMPLE_PLAN = EXAMPLE_PLAN_PATH.read_bytes()

_ids = itertools.count(1)

ActionFactory = Callable[..., ImprovementAction]


def action(
    kind: ActionKind | str = ActionKind.NO_OP,
    module: str = "cognition.detector",
    *,
    action_id: str | None = None,
    **parameters: str,
) -> ImprovementAction:
    """An action with a fresh id; keyword arguments become its parameters."""
    return ImprovementAction(
        action_id=action_id or f"act-{next(_ids)}",
        module_name=module,
        action_kind=ActionKind(kind),
        parameters=parameters,
        rationale="test",
    )


def plan_of(*kinds: str, plan_id: str = "p") -> dict[str, object]:
    return {
        "plan_id": plan_id,
        "actions": [
            {"action_id": f"{plan_id}-{i}", "module_name": f"m{i}", "action_kind": kind}
            for i, kind in enumerate(kinds)
        ],
    }


def no_op_plan(plan_id: str, actions: int = 2) -> dict[str, object]:
    return {
        "plan_id": plan_id,
        "actions": [
            {"action_id": f"{plan_id}-{i}", "module_name": f"m{i}", "action_kind": "NO_OP"}
            for i in range(actions)
        ],
    }


async def wait_for(condition: Callable[[], object], *, timeout: float = 20.0, what: str) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
