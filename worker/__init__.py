"""The self-optimiser: enacts ImprovementActions under guardrails, in-process or as a worker."""

from worker.clock import Clock, ManualClock, SystemClock
from worker.errors import ConfigError, OptimiserError, ParameterError, SubsystemUnavailable
from worker.guardrails import OptimiserConfig
from worker.inprocess import DetectorConfig, OrchestratorRequest, seed_subsystems
from worker.metrics import OptimiserMetrics
from worker.optimiser import AsyncSelfOptimiser, NullOptimiser, SelfOptimiser
from worker.ports import QueueReviewSink, SubsystemResult, Subsystems

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
    "QueueReviewSink",
    "SelfOptimiser",
    "SubsystemResult",
    "SubsystemUnavailable",
    "Subsystems",
    "SystemClock",
    "seed_subsystems",
]
