"""Shared fixtures: an injected clock, action factories, a seed-shaped cycle and orchestrator."""

from __future__ import annotations

import enum
import itertools
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, Mock

import pytest
from hypothesis import settings

from schemas import ActionKind, ImprovementAction
from worker import DetectorConfig, ManualClock

settings.register_profile("ci", max_examples=300, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

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


@pytest.fixture
def make_action() -> ActionFactory:
    return action


@pytest.fixture
def clock() -> ManualClock:
    """A clock at monotonic 0.0, like a host that has just booted."""
    return ManualClock()


class SwapOutcome(enum.Enum):
    SUCCESS = "SUCCESS"
    ROLLED_BACK = "ROLLED_BACK"


def seed_cycle(**overrides: Any) -> Mock:
    """A CognitiveCycle mock with exactly the seed's three attributes (no auto-created ones)."""
    cycle = Mock(spec_set=["_detector_config", "_budget_map", "_load_shedder"])
    cycle._detector_config = overrides.get("detector_config", DetectorConfig())
    cycle._budget_map = overrides.get("budget_map", {})
    cycle._load_shedder = overrides.get("load_shedder", Mock(spec_set=["shed"], shed=AsyncMock()))
    return cycle


def seed_orchestrator(outcome: SwapOutcome = SwapOutcome.SUCCESS, detail: str = "swapped") -> Mock:
    """A LiveModuleOrchestrator mock whose orchestrate_swap answers with ``outcome``."""
    orchestrator = Mock(spec_set=["orchestrate_swap"])
    orchestrator.orchestrate_swap = AsyncMock(
        return_value=SimpleNamespace(outcome=outcome, detail=detail)
    )
    return orchestrator


@pytest.fixture
def cycle() -> Mock:
    return seed_cycle()


@pytest.fixture
def orchestrator() -> Mock:
    return seed_orchestrator()
