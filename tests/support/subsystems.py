"""Stand-ins for the seed's subsystems: its cycle and orchestrator as mocks."""

from __future__ import annotations

import enum
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, Mock

from worker import DetectorConfig


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
