"""What tests build their inputs from: actions, plans, records, the example plan, the files a
misused command line names, and a poll."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from schemas import ActionKind, EnactmentRecord, EnactmentStatus, ImprovementAction
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


def record(action_id: str, at: datetime, *, replay: bool = False) -> EnactmentRecord:
    """A NO_OP action's SKIPPED record in plan "p", attempted ``at``."""
    return EnactmentRecord(
        plan_id="p",
        action=ImprovementAction(
            action_id=action_id, module_name="m", action_kind=ActionKind.NO_OP
        ),
        status=EnactmentStatus.SKIPPED,
        detail="no-op",
        attempted_at=at,
        replay=replay,
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


def cli_files(tmp_path: Path) -> dict[str, str]:
    """A plan, a bad plan and one too big for a message, written to ``tmp_path``, by the word a
    misused command line names each by."""
    plan = {
        "plan_id": "p",
        "actions": [{"action_id": "a", "module_name": "m", "action_kind": "NO_OP"}],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "bad.json").write_text('{"plan_id": "p\\n", "actions": []}')
    huge = dict(plan, planner="", padding="x" * 1_100_000)
    (tmp_path / "huge.json").write_text(json.dumps(huge))
    return {
        "PLAN": str(tmp_path / "plan.json"),
        "BAD_PLAN": str(tmp_path / "bad.json"),
        "HUGE_PLAN": str(tmp_path / "huge.json"),
    }


async def wait_for(condition: Callable[[], object], *, timeout: float = 20.0, what: str) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
