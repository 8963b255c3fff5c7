"""Stand-ins for the subsystems: the seed's cycle and orchestrator as mocks, and a load
shedder that counts what it was asked to do."""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, Mock

from schemas.commands import (
    IncreaseBudget,
    ShedLoad,
    SubsystemCommand,
    SwapModule,
    TuneThreshold,
)
from worker import DetectorConfig, SubsystemResult


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


@dataclass
class CountingLoad:
    """A load shedder that counts what it was really asked to do, per action id."""

    applied: Counter[str] = field(default_factory=Counter)
    pause_s: float = 0.0

    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        if self.pause_s:
            await asyncio.sleep(self.pause_s)
        self.applied[command.action_id] += 1
        return SubsystemResult(True, "shed")


class EveryVerb:
    """A stand-in for every subsystem at once: each command goes to the method of its verb."""

    async def apply(self, command: SubsystemCommand) -> SubsystemResult:
        match command.arguments:
            case TuneThreshold() as arguments:
                return await self.tune(command, arguments)
            case IncreaseBudget() as arguments:
                return await self.increase(command, arguments)
            case ShedLoad():
                return await self.shed(command)
            case SwapModule() as arguments:
                return await self.swap(command, arguments)

    async def tune(self, command: SubsystemCommand, request: TuneThreshold) -> SubsystemResult:
        raise NotImplementedError

    async def increase(self, command: SubsystemCommand, request: IncreaseBudget) -> SubsystemResult:
        raise NotImplementedError

    async def shed(self, command: SubsystemCommand) -> SubsystemResult:
        raise NotImplementedError

    async def swap(self, command: SubsystemCommand, request: SwapModule) -> SubsystemResult:
        raise NotImplementedError
