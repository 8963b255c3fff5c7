"""The self-optimiser: enacts ImprovementActions under guardrails, in-process or as a worker."""

from worker.core.clock import Clock, ManualClock, SystemClock
from worker.core.config import OptimiserConfig
from worker.core.errors import ConfigError, OptimiserError, ParameterError, SubsystemUnavailable
from worker.core.metrics import OptimiserMetrics
from worker.core.optimiser import AsyncSelfOptimiser, NullOptimiser, SelfOptimiser
from worker.core.ports import Port, SubsystemResult, Subsystems
from worker.core.seed import DetectorConfig, OrchestratorRequest, QueueReviewSink, seed_subsystems

__all__ = [
    "AsyncSelfOptimiser",
    "Clock",
    "ConfigError",
    "DetectorConfig",
    "ManualClock",
    "NullOptimiser",
    "OptimiserConfig",
    "OptimiserError",
    "OptimiserMetrics",
    "OrchestratorRequest",
    "ParameterError",
    "Port",
    "QueueReviewSink",
    "SelfOptimiser",
    "SubsystemResult",
    "SubsystemUnavailable",
    "Subsystems",
    "SystemClock",
    "seed_subsystems",
]
